"""Load a model spec as a causal LM ready for inference: the local backend every family measures with.

Importing this module loads neither torch nor transformers (they are imported inside the loaders).
"""

from __future__ import annotations

import logging
import os
import pathlib
import sys
import time
from dataclasses import dataclass
from typing import Any

from workbench import hub
from workbench.hub import first_line
from workbench.models.gguf_cache import build_cache, cache_valid, gguf_key
from workbench.models.spec import (ATTN_IMPLEMENTATIONS, ModelLoadError, cache_root, classify_model_spec, embedded_gguf,
                                   resolve_device_dtype)
from workbench.secrets import scrub_paragraph

log = logging.getLogger("workbench.models")


@dataclass
class LoadedModel:
    """A causal LM ready for inference: eval mode, on its device, gradients off."""

    spec: str  # what the user wrote
    source: str  # 'embedded-cache' | 'gguf-cache' | 'gguf' | 'folder' | 'hub'
    model: Any  # transformers causal LM
    tokenizer: Any
    device: str
    dtype: str
    attn_implementation: str  # the current one
    load_seconds: float  # wall-clock seconds spent in load_model

    def describe(self) -> dict:
        """JSON-able summary: shapes in counts (layers, heads), head_dim/hidden_size in channels,
        max_positions in tokens, n_params counted once for tied weights, load_seconds in seconds."""
        config = self.model.config
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        n_heads = int(text.num_attention_heads)
        hidden = int(text.hidden_size)
        return {
            "spec": self.spec, "source": self.source, "device": self.device, "dtype": self.dtype,
            "attn_implementation": self.attn_implementation, "n_layers": int(text.num_hidden_layers),
            "n_kv_heads": int(getattr(text, "num_key_value_heads", None) or n_heads), "n_heads": n_heads,
            "head_dim": int(getattr(text, "head_dim", None) or hidden // n_heads), "hidden_size": hidden,
            "max_positions": getattr(text, "max_position_embeddings", None),
            "n_params": int(sum(p.numel() for p in self.model.parameters())),  # parameters() dedups tied ones
            "architecture": type(self.model).__name__, "load_seconds": round(self.load_seconds, 3),
        }

    # What families can ask of this backend: prefill a context into a cache, score a continuation through
    # a cache, generate after a context (an API model offers only "generate").
    capabilities = frozenset({"prefill", "score", "generate"})

    def auto_batch_size(self, context_tokens: int, continuation_tokens: int, limit: int = 16) -> int:
        """Samples per forward pass that fit the GPU's free memory with room to spare; 1 on a CPU (no gain
        there: one sample already keeps the cores busy).

        Per sample, on the shared-prefill path: the full cache, one pruned cache and the copy a continuation
        makes of it (≤ 3 full caches), a layer's prefill activations, and the continuation's logits in float32.
        """
        import torch

        model = self.model
        if model.device.type != "cuda":
            return 1
        cfg = model.config
        cfg = getattr(cfg, "text_config", None) or cfg
        element = torch.finfo(model.dtype).bits // 8
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        tokens = context_tokens + continuation_tokens
        full_cache = 2 * cfg.num_hidden_layers * kv_heads * head_dim * tokens * element
        activations = context_tokens * (6 * cfg.hidden_size + 3 * getattr(cfg, "intermediate_size", 4 * cfg.hidden_size)) * element
        logits = continuation_tokens * cfg.vocab_size * (element + 8)
        per_sample = 3 * full_cache + activations + logits
        free, _ = torch.cuda.mem_get_info(model.device)
        return max(1, min(limit, int(0.6 * free // per_sample)))

    def set_attention(self, impl: str) -> None:
        """Switch attention kernels in place ('eager' or 'sdpa'); weights and device are kept."""
        _check_attn(impl)
        self.model.set_attn_implementation(impl)
        self.attn_implementation = self.model.config._attn_implementation


def quiet_transformers() -> None:
    """The workbench reports loading itself; transformers' per-tensor progress bars would flood stderr and logs."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def load_model(spec: str, device: str = "auto", dtype: str = "auto", attn_implementation: str = "sdpa",
               cache_dir: str | os.PathLike | None = None) -> LoadedModel:
    """Load `spec` as a causal LM; `cache_dir` replaces cache_root() for the de-quantised GGUF cache.

    Hub models use Hugging Face's own cache (HF_HOME). Raises ModelLoadError for anything the user can fix,
    ValueError for an invalid device, dtype or attention implementation."""
    started = time.perf_counter()
    quiet_transformers()
    _check_attn(attn_implementation)
    kind = classify_model_spec(spec)
    device, dtype = resolve_device_dtype(device, dtype)
    root = pathlib.Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    log.info("loading %s model %r on %s as %s", kind, spec, device, dtype)
    spec_path = pathlib.Path(spec.strip()).expanduser()
    if kind in ("embedded", "gguf"):
        gguf = embedded_gguf(spec.strip().lower()) if kind == "embedded" else spec_path
        key = spec.strip().lower() if kind == "embedded" else gguf_key(gguf)
        folder = root / "models" / key
        cached = cache_valid(folder, gguf)
        in_memory = None if cached else build_cache(gguf, folder)
        if in_memory is None:
            # Even right after de-quantising, read the model back from the cache (~1 s on SmolLM2), so a
            # first and a later load behave exactly alike.
            model, tokenizer = _from_folder(folder, dtype, attn_implementation)
            source = ("embedded-cache" if kind == "embedded" else "gguf-cache") if cached else "gguf"
        else:  # no cache could be written: use the de-quantised model as it is
            model, tokenizer = in_memory
            model.set_attn_implementation(attn_implementation)
            source = "gguf"
    elif kind == "folder":
        model, tokenizer = _from_folder(spec_path, dtype, attn_implementation)
        source = "folder"
    else:
        model, tokenizer = _from_hub(spec.strip(), device, dtype, attn_implementation)
        source = "hub"
    import torch
    if not hasattr(model, "hf_device_map"):  # device_map already placed hub models on the GPU
        model.to(device=device)
    model.to(dtype=getattr(torch, dtype))
    model.eval().requires_grad_(False)
    seconds = time.perf_counter() - started
    log.info("loaded %r from %s in %.1f s", spec, source, seconds)
    return LoadedModel(spec=spec, source=source, model=model, tokenizer=tokenizer, device=device, dtype=dtype,
                       attn_implementation=model.config._attn_implementation, load_seconds=seconds)


def _from_folder(folder: pathlib.Path, dtype: str, attn: str):
    """Load a Hugging Face folder (config.json + weights + tokenizer). Returns (model, tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=getattr(torch, dtype),
                                                     attn_implementation=attn)
    except (OSError, ValueError, KeyError, ImportError) as err:
        log.debug("folder load failed", exc_info=True)
        raise ModelLoadError(
            f"Could not load the model folder '{folder}' ({type(err).__name__}: {first_line(err)}): it needs "
            "config.json, the weights (*.safetensors or *.bin) and the tokenizer files of a causal language "
            "model that this transformers version supports.") from None
    return model, tokenizer


def _from_hub(model_id: str, device: str, dtype: str, attn: str):
    """Load a hub id via Hugging Face's cache; offline or unreachable -> local cache only."""
    import torch
    from huggingface_hub import errors as hub_errors
    from transformers import AutoModelForCausalLM, AutoTokenizer
    offline = hub.hf_offline() or not hub.hub_reachable()
    if offline:
        log.info("Hugging Face hub offline or unreachable; looking only in the local cache for %s", model_id)
    kwargs: dict = {"dtype": getattr(torch, dtype), "attn_implementation": attn, "local_files_only": offline}
    if device.startswith("cuda"):
        kwargs["device_map"] = device  # loads shards straight to the GPU instead of through CPU memory
    caught = (OSError, ValueError, hub_errors.EntryNotFoundError)
    if "httpx" in sys.modules:  # huggingface_hub>=1 talks httpx, whose errors are not OSErrors
        caught += (sys.modules["httpx"].HTTPError,)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_id, local_files_only=offline)
        model = AutoModelForCausalLM.from_pretrained(model_id, **kwargs)
    except caught as err:
        log.debug("hub load failed", exc_info=True)
        raise ModelLoadError(scrub_paragraph(hub.hub_message(model_id, err, offline, hub_errors))) from None
    return model, tokenizer


def _check_attn(impl: str) -> None:
    if impl not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"Unknown attention implementation '{impl}': use one of {', '.join(ATTN_IMPLEMENTATIONS)}.")
