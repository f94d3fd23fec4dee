"""A KV cache layer with room to grow: what comes after the context is written into space reserved behind it.

transformers' ``DynamicLayer`` concatenates on every update (``torch.cat`` of the whole cache with the new
entries), so a continuation pass copies the cache once and a generated answer copies it once per token. A
``RoomyLayer`` keeps its keys and values at the front of a buffer with ``room`` spare positions: an update that
fits is a copy of the new entries only, and the attention reads a view of the buffer's front. When it does not fit
(more tokens than the room), or when something else replaced the layer's tensors (a kvpress press compressing the
cache assigns new ones; ``crop``/``batch_select_indices`` do too), the next update allocates a new buffer with the
room again — one copy, as a concatenation would have made. Values are the same as with ``DynamicLayer``: the
attention sees the same keys and values, as a view of the buffer instead of a fresh tensor (tested to float32
rounding in tests/test_kv_room.py).

Its buffers stay at one address while the room lasts: the precondition for capturing the continuation step in a
CUDA graph (not done yet).
"""

from __future__ import annotations

import functools

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class RoomyLayer(DynamicLayer):
    def __init__(self, room: int = 0):
        super().__init__()
        self.room = max(0, int(room))
        self._key_buffer: torch.Tensor | None = None
        self._value_buffer: torch.Tensor | None = None

    @classmethod
    def reserved(cls, keys_like: torch.Tensor, values_like: torch.Tensor, length: int, room: int) -> RoomyLayer:
        """A layer of ``length`` entries shaped like ``keys_like``/``values_like`` (B, H, *, D), its contents to be
        written by the caller into ``layer.keys`` / ``layer.values`` (views of the buffers' front; e.g.
        ``torch.gather(..., out=layer.keys)``)."""
        layer = cls(room)
        layer.dtype, layer.device, layer.is_initialized = keys_like.dtype, keys_like.device, True
        layer._key_buffer = _buffer(keys_like, length + layer.room)
        layer._value_buffer = _buffer(values_like, length + layer.room)
        layer.keys, layer.values = layer._key_buffer[..., :length, :], layer._value_buffer[..., :length, :]
        return layer

    def _owns_tensors(self) -> bool:
        """The layer's keys and values are still the front of its buffers (nobody replaced them)."""
        if self._key_buffer is None or self.keys is None or self.values is None:
            return False
        return all(t.data_ptr() == buf.data_ptr() and t.stride() == buf.stride() and t.shape[:-2] == buf.shape[:-2]
                   for t, buf in ((self.keys, self._key_buffer), (self.values, self._value_buffer)))

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, cache_kwargs: dict | None = None):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n, t = self.get_seq_length(), key_states.shape[-2]
        if not (self._owns_tensors() and n + t <= self._key_buffer.shape[-2]):
            keys, values = _buffer(key_states, n + t + self.room), _buffer(value_states, n + t + self.room)
            if n:
                keys[..., :n, :].copy_(self.keys)
                values[..., :n, :].copy_(self.values)
            self._key_buffer, self._value_buffer = keys, values
        self._key_buffer[..., n:n + t, :].copy_(key_states)
        self._value_buffer[..., n:n + t, :].copy_(value_states)
        self.keys, self.values = self._key_buffer[..., :n + t, :], self._value_buffer[..., :n + t, :]
        return self.keys, self.values


def _buffer(like: torch.Tensor, capacity: int) -> torch.Tensor:
    b, h, _, d = like.shape
    return torch.empty((b, h, capacity, d), dtype=like.dtype, device=like.device)


def roomy_cache(room: int) -> DynamicCache:
    """An empty cache whose layers (created on first use, like DynamicCache's) keep ``room`` positions spare."""
    cache = DynamicCache()
    cache.layer_class_to_replicate = functools.partial(RoomyLayer, room)
    return cache


def cache_of(layers: list[RoomyLayer]) -> DynamicCache:
    cache = DynamicCache()
    cache.layers = list(layers)
    return cache


def make_room(cache, room: int) -> None:
    """Give every layer of ``cache`` at least ``room`` spare positions (one copy of a layer that has less), so the
    next ``room`` entries are written in place instead of concatenated."""
    for i, layer in enumerate(cache.layers):
        if layer.keys is None or layer.keys.numel() == 0:
            continue
        if isinstance(layer, RoomyLayer):
            layer.room = max(layer.room, room)
            if layer._owns_tensors() and layer._key_buffer.shape[-2] - layer.keys.shape[-2] >= room:
                continue
        roomy = RoomyLayer.reserved(layer.keys, layer.values, layer.keys.shape[-2], room)
        roomy.keys.copy_(layer.keys)
        roomy.values.copy_(layer.values)
        cache.layers[i] = roomy
