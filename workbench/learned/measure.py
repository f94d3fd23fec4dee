"""A trained (or untrained) soft compressor ready on the evaluated model (torch).

``SoftPrefixer.prefill(ids)`` turns context token ids (B, C) into soft vectors and prefills them as input
embeddings into a fresh cache: the protocols (``evaluate.evaluate_soft_batch``, ``task_eval.evaluate_soft``) then
feed the continuation (or question) exactly as after any other compressed context, its positions following the k
soft vectors.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch
from transformers import DynamicCache

from workbench.learned import architectures, checkpoint, soft, store


class SoftPrefixer:
    """Loads a run's checkpoint for ``backend`` (refusing another model's or shape's, naming the file)."""

    def __init__(self, backend, spec: str, untrained: bool = False):
        from workbench.kvzap.scorer import fingerprint

        started = time.perf_counter()
        model = backend.model
        folder = store.find(spec)
        compressor, lora, state = checkpoint.load_compressor(folder, model, fingerprint(model), model.device)
        if untrained:
            # The run's own starting point: the same seed before the same build as train() (its step 0).
            s = compressor.spec()
            torch.manual_seed(int((state.get("config") or {}).get("seed", 0)))
            compressor = architectures.build(s["architecture"], s["d"], s["rate"], s["context_tokens"]).to(model.device).eval()
            lora = None
        self.backend, self.compressor, self.folder, self.untrained = backend, compressor, folder, untrained
        self.lora, self.lora_spec = lora, state.get("lora")
        self.rate, self.n_params = compressor.rate, compressor.n_params()
        self.step = 0 if untrained else state["step"]
        self.load_seconds = time.perf_counter() - started

    @contextmanager
    def model(self):
        """The evaluated model, with the run's LoRA adapters on for the duration if it has any."""
        with soft.lora_applied(self.backend.model, self.lora_spec, self.lora) as m:
            yield m

    def prefill(self, model, context_ids: torch.Tensor) -> tuple[DynamicCache, int, float, float]:
        """(cache holding the k soft vectors, k, compression seconds, prefill seconds) for ``context_ids`` (B, C)."""
        return prefill(model, self.compressor, context_ids)

    def fields(self, k: int, compression_s: float) -> dict:
        """What a record adds: latency (seconds per sample), size, and which weights were measured."""
        return {"compression_seconds": compression_s, "compressed_tokens": k, "compressor_params": self.n_params,
                "own": {"checkpoint": str(self.folder), "step": self.step, "untrained": self.untrained}}


def prefill(model, compressor, context_ids: torch.Tensor) -> tuple[DynamicCache, int, float, float]:
    """(cache holding the k soft vectors, k, compression seconds, prefill seconds) for ``context_ids`` (B, C)."""
    sync = (lambda: torch.cuda.synchronize(model.device)) if model.device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        sync()
        t0 = time.perf_counter()
        vectors = soft.soft_vectors(model, compressor, context_ids)
        sync()
        t1 = time.perf_counter()
        cache = DynamicCache()
        model(inputs_embeds=vectors, past_key_values=cache, use_cache=True, logits_to_keep=1)
        sync()
        t2 = time.perf_counter()
    return cache, vectors.shape[1], t1 - t0, t2 - t1

