"""The four soft compressors of seed 002, in torch: each maps the evaluated model's input embeddings of a
context, (B, C, d), to k = round(rate × C) soft vectors, (B, k, d), in the same embedding space.

``rate`` is the workbench's one meaning: the fraction of context positions kept (k / C). Every architecture
is built for one rate and works for any context length (learned query tables are resampled to k rows), so
a compressor trained on 256-token windows still reads a 300-token QA paragraph.

Initialisation makes the untrained compressor a stride selection of the context's own token embeddings (soft
vector j ≈ the embedding of token ⌊j·C/k⌋): the conv filter starts one-hot, the pooling weights peaked on a
window's first place, and the attention compressors carry a learned locality prior (a sharp bias toward their
stride position, added to the content scores) while their residual branches start at zero. Why: on SmolLM2 an
average of real embeddings is far from anything the model was trained on (soft vectors that are window means give a
continuation NLL near 9 nats/token, worse than no context at all, ~4.9), while every 8th real token gives ~4.3.
Starting from the selection, what training adds is measured against a fair "untrained self".
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def soft_length(rate: float, context_tokens: int) -> int:
    """k = round(rate × C), at least 1 (tokens)."""
    return max(1, int(round(rate * context_tokens)))


def _heads(d: int) -> int:
    """Attention heads of width 64 where d allows it (SmolLM2's 576 → 9), else the largest divisor ≤ d/16."""
    for h in [d // 64, *range(max(1, d // 16), 0, -1)]:
        if h >= 1 and d % h == 0:
            return h
    return 1


def _resample(table: torch.Tensor, k: int) -> torch.Tensor:
    """A learned (n, d) table of queries resampled to (k, d) rows by linear interpolation (identity for n = k)."""
    if table.shape[0] == k:
        return table
    return F.interpolate(table.t().unsqueeze(0), size=k, mode="linear", align_corners=True).squeeze(0).t()


SHARPNESS = 8.0  # nats per token of distance: the untrained attention puts ≥ 99.9% on the stride position


def _locality(k: int, c: int, sharpness: torch.Tensor) -> torch.Tensor:
    """(k, c) attention bias: query j prefers context position ⌊j·c/k⌋ (its stride position), by ``sharpness``
    (a learned scalar) nats per token of distance."""
    stride = c / k
    centres = torch.floor(torch.arange(k, device=sharpness.device, dtype=torch.float32) * stride)
    positions = torch.arange(c, device=sharpness.device, dtype=torch.float32)
    return -sharpness * (positions[None, :] - centres[:, None]).abs()


def _residual_feed_forward(d: int, ff_mult: int) -> nn.Sequential:
    """LayerNorm → Linear → GELU → Linear, its output layer zero-initialised: a residual branch that starts as
    nothing, so the untrained compressor is still the stride selection."""
    ff = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, ff_mult * d), nn.GELU(), nn.Linear(ff_mult * d, d))
    nn.init.zeros_(ff[-1].weight)
    nn.init.zeros_(ff[-1].bias)
    return ff


class SoftCompressor(nn.Module):
    """Base: ``forward(embeds (B, C, d)) -> (B, k, d)`` with k = soft_length(rate, C)."""

    name = "?"

    def __init__(self, d: int, rate: float, context_tokens: int):
        super().__init__()
        self.d, self.rate, self.context_tokens = d, float(rate), int(context_tokens)
        self.k = soft_length(rate, context_tokens)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def spec(self) -> dict:
        """What rebuilds this module's shapes (stored beside its weights, compared on load)."""
        return {"architecture": self.name, "d": self.d, "rate": self.rate, "context_tokens": self.context_tokens}


class CrossAttentionCompressor(SoftCompressor):
    """Perceiver-style: k learned queries attend to the (normalised) context; the values are the raw embeddings;
    a learned locality prior (``_locality``) adds to the content scores, so each soft vector starts as its stride
    position's embedding and training decides what else to read; a zero-initialised feed-forward branch refines it."""

    name = "cross-attention"

    def __init__(self, d, rate, context_tokens, ff_mult: int = 2):
        super().__init__(d, rate, context_tokens)
        self.queries = nn.Parameter(torch.randn(self.k, d) * 0.02)
        self.norm = nn.LayerNorm(d)
        self.q = nn.Linear(d, d)
        self.kproj = nn.Linear(d, d)
        self.heads = _heads(d)
        self.sharpness = nn.Parameter(torch.tensor(SHARPNESS))
        self.ff = _residual_feed_forward(d, ff_mult)

    def forward(self, x):
        b, c, d = x.shape
        k = soft_length(self.rate, c)
        h = self.heads
        q = self.q(_resample(self.queries, k)).view(1, k, h, d // h).transpose(1, 2).expand(b, -1, -1, -1)
        keys = self.kproj(self.norm(x)).view(b, c, h, d // h).transpose(1, 2)
        values = x.view(b, c, h, d // h).transpose(1, 2)
        bias = _locality(k, c, self.sharpness).to(x.dtype)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=bias).transpose(1, 2).reshape(b, k, d)
        return out + self.ff(out)


class ConvCompressor(SoftCompressor):
    """Strided depthwise 1-D convolution (kernel = stride = round(1/rate), one filter per channel, started one-hot on
    the window's first position) then adaptive average pooling to exactly k positions; a zero-initialised pointwise
    branch mixes channels."""

    name = "conv"

    def __init__(self, d, rate, context_tokens):
        super().__init__(d, rate, context_tokens)
        self.stride = max(1, int(round(1 / rate)))
        self.conv = nn.Conv1d(d, d, kernel_size=self.stride, stride=self.stride, groups=d)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[:, 0, 0] = 1.0
        nn.init.zeros_(self.conv.bias)
        self.mix = nn.Linear(d, d)
        nn.init.zeros_(self.mix.weight)
        nn.init.zeros_(self.mix.bias)

    def forward(self, x):
        b, c, d = x.shape
        k = soft_length(self.rate, c)
        pad = (-c) % self.stride
        y = F.pad(x.transpose(1, 2), (0, pad), mode="replicate") if pad else x.transpose(1, 2)
        y = F.adaptive_avg_pool1d(self.conv(y), k).transpose(1, 2)
        return y + self.mix(y)


class PoolingCompressor(SoftCompressor):
    """Learned weighted average over k fixed windows of ≈ C/k positions: each position's weight is a learned
    score of its embedding plus a learned bias for its place in the window, softmaxed within the window.
    Started peaked on the window's first place (bias ``SHARPNESS``: ≥ 98% of the weight)."""

    name = "pooling"

    def __init__(self, d, rate, context_tokens):
        super().__init__(d, rate, context_tokens)
        self.window = max(1, math.ceil(context_tokens / self.k))
        self.score = nn.Linear(d, 1)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)
        place = torch.zeros(self.window)
        place[0] = SHARPNESS * 0.75  # 6 nats: e^6 / (e^6 + 7) ≈ 0.98 for a window of 8
        self.place = nn.Parameter(place)

    def forward(self, x):
        b, c, d = x.shape
        k = soft_length(self.rate, c)
        w = math.ceil(c / k)
        pad = k * w - c
        scores = self.score(x).squeeze(-1) + _resample(self.place[:, None], w)[:, 0].repeat(math.ceil(c / w))[:c]
        if pad:  # the last window is short: its padded places get no weight
            x = F.pad(x, (0, 0, 0, pad))
            scores = F.pad(scores, (0, pad), value=float("-inf"))
        weights = torch.softmax(scores.view(b, k, w).float(), dim=-1).to(x.dtype)
        return torch.einsum("bkw,bkwd->bkd", weights, x.view(b, k, w, d))


class GistCompressor(SoftCompressor):
    """Gist tokens (Mu et al. 2023), as a separate module: k learned gist tokens cross-attend to the context,
    self-attend among themselves and pass a feed-forward (pre-norm residual blocks). The cross-attention's values
    are the raw embeddings under the same locality prior as the cross-attention compressor, and the self-attention
    and feed-forward outputs start at zero, so an untrained gist token is its (small) learned vector plus its
    stride position's embedding."""

    name = "gist"

    def __init__(self, d, rate, context_tokens, ff_mult: int = 2):
        super().__init__(d, rate, context_tokens)
        self.gist = nn.Parameter(torch.randn(self.k, d) * 1e-3)
        self.heads = _heads(d)
        self.norm_q, self.norm_ctx = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.kproj = nn.Linear(d, d), nn.Linear(d, d)
        self.sharpness = nn.Parameter(torch.tensor(SHARPNESS))
        self.norm_self = nn.LayerNorm(d)
        self.self_attn = nn.MultiheadAttention(d, self.heads, batch_first=True)
        nn.init.zeros_(self.self_attn.out_proj.weight)
        nn.init.zeros_(self.self_attn.out_proj.bias)
        self.ff = _residual_feed_forward(d, ff_mult)

    def forward(self, x):
        b, c, d = x.shape
        k = soft_length(self.rate, c)
        h = self.heads
        g = _resample(self.gist, k).unsqueeze(0).expand(b, -1, -1)
        q = self.q(self.norm_q(g)).view(b, k, h, d // h).transpose(1, 2)
        keys = self.kproj(self.norm_ctx(x)).view(b, c, h, d // h).transpose(1, 2)
        values = x.view(b, c, h, d // h).transpose(1, 2)
        bias = _locality(k, c, self.sharpness).to(x.dtype)
        g = g + F.scaled_dot_product_attention(q, keys, values, attn_mask=bias).transpose(1, 2).reshape(b, k, d)
        s = self.norm_self(g)
        g = g + self.self_attn(s, s, s, need_weights=False)[0]
        return g + self.ff(g)


ARCHITECTURES: dict[str, type[SoftCompressor]] = {
    cls.name: cls for cls in (CrossAttentionCompressor, ConvCompressor, PoolingCompressor, GistCompressor)
}


def build(architecture: str, d: int, rate: float, context_tokens: int) -> SoftCompressor:
    """A fresh compressor (seeded by the caller). Raises KeyError naming the known architectures."""
    if architecture not in ARCHITECTURES:
        raise KeyError(f"unknown architecture {architecture!r}; architectures: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[architecture](d, rate, context_tokens)
