"""GGUF files and their de-quantised cache.

GGUF files, the embedded SmolLM2 included, take ~20 s to de-quantise, so the first load writes the float32
weights as a plain Hugging Face folder under ``cache_root()/models/<key>/`` (atomically); later loads read
that folder in about a second. A cache is keyed by the file's name, size and a content fingerprint, so two
installs of one file share it and a changed file gets a new one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
import re
import shutil
import uuid

from workbench.hub import first_line
from workbench.models.spec import ModelLoadError

log = logging.getLogger("workbench.models")
CACHE_FORMAT = 1  # bump when the cache layout changes, so old caches are rebuilt
_MANIFEST = "workbench-cache.json"


def gguf_key(path: pathlib.Path) -> str:
    """Cache folder name for a user GGUF: its name plus a hash of its name, size and content fingerprint."""
    digest = hashlib.sha256(json.dumps(_manifest_for(path), sort_keys=True).encode()).hexdigest()[:16]
    return f"gguf-{re.sub(r'[^A-Za-z0-9._-]', '_', path.stem)}-{digest}"


_FINGERPRINT_BYTES = 1 << 20


def _fingerprint(gguf: pathlib.Path, size: int) -> str:
    """sha256 of the file's first and last MiB: a changed file (an upgraded package) has another one, while
    the same file installed twice (two virtual environments, other mtimes) shares one cache."""
    digest = hashlib.sha256()
    with open(gguf, "rb") as fh:
        digest.update(fh.read(_FINGERPRINT_BYTES))
        fh.seek(max(0, size - _FINGERPRINT_BYTES))
        digest.update(fh.read(_FINGERPRINT_BYTES))
    return digest.hexdigest()


def _manifest_for(gguf: pathlib.Path) -> dict:
    size = gguf.stat().st_size
    return {"format": CACHE_FORMAT, "gguf_name": gguf.name, "gguf_size": size, "gguf_fingerprint": _fingerprint(gguf, size)}


def cache_valid(folder: pathlib.Path, gguf: pathlib.Path) -> bool:
    """True when `folder` is a complete cache of this GGUF file (same name, size and content fingerprint)."""
    try:
        manifest = json.loads((folder / _MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    weights = folder / "model.safetensors"
    # The recorded weight size catches a file cut short by a crash before the data reached the disk.
    complete = (folder / "config.json").is_file() and weights.is_file() and \
        manifest.get("weights_bytes") == weights.stat().st_size
    return complete and all(manifest.get(k) == v for k, v in _manifest_for(gguf).items())


def _from_gguf(gguf: pathlib.Path):
    """De-quantise a GGUF to float32 (~20 s for SmolLM2-135M on 2 CPU cores). Returns (model, tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    log.info("de-quantising %s (first load; later loads use the cache)", gguf)
    # transformers wraps the tensors in a plain tqdm bar that no setting turns off; it would scribble over
    # the app's screen and the headless log, so iterate them without it for the duration of this load.
    bar = getattr(gguf_utils, "tqdm", None)
    if bar is not None:
        gguf_utils.tqdm = lambda iterable, *args, **kwargs: iterable
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except (OSError, ValueError, KeyError, RuntimeError, ImportError) as err:
        log.debug("GGUF load failed", exc_info=True)
        raise ModelLoadError(
            f"Could not load the GGUF file '{gguf}' ({type(err).__name__}: {first_line(err)}): transformers reads "
            "only some architectures and quantisation types from GGUF (needs the 'gguf' package); try the "
            "model's Hugging Face folder or hub id instead.") from None
    finally:
        if bar is not None:
            gguf_utils.tqdm = bar
    # The GGUF tokenizer metadata gives eos = <|im_start|> (the bos) for SmolLM2 while the model's config
    # says eos 2 = <|im_end|>; align the tokenizer with the config so generation and padding agree.
    for attr in ("eos", "pad"):
        wanted = getattr(model.config, f"{attr}_token_id", None)
        if isinstance(wanted, int) and getattr(tokenizer, f"{attr}_token_id") != wanted:
            setattr(tokenizer, f"{attr}_token", tokenizer.convert_ids_to_tokens(wanted))
    return model, tokenizer


def build_cache(gguf: pathlib.Path, folder: pathlib.Path):
    """De-quantise `gguf` and write it to `folder` atomically. Returns None once the cache is written, or
    the in-memory (model, tokenizer) when it could not be (read-only or full disk), so nothing is lost."""
    from safetensors.torch import save_model
    model, tokenizer = _from_gguf(gguf)
    # A sibling temp folder on the same file system makes the final rename atomic: a killed process
    # leaves a stray ".tmp-" folder, never a half-written cache that looks complete.
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir(parents=True)
        # save_pretrained refuses GGUF-loaded models; save_model writes the tied lm_head/embedding once.
        save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        config = model.config
        config.architectures = [type(model).__name__]  # the GGUF config has none; older loaders need it
        for name in [k for k in config.to_dict() if "gguf" in k.lower() or k == "quantization_config"]:
            delattr(config, name)  # defensive: nothing GGUF-specific may reach the plain folder
        config.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        manifest = {**_manifest_for(gguf), "weights_bytes": (tmp / "model.safetensors").stat().st_size}
        (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=1))
        # Stale (package upgraded, file changed): move aside, then delete. A cache that another process
        # finished meanwhile is kept: the rename below then fails and the except clause uses theirs.
        if folder.exists() and not cache_valid(folder, gguf):
            stale = folder.parent / f".{folder.name}.stale-{uuid.uuid4().hex[:8]}"
            os.replace(folder, stale)
            shutil.rmtree(stale, ignore_errors=True)
        os.replace(tmp, folder)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if cache_valid(folder, gguf):  # another process finished the same cache first; use theirs
            return None
        log.warning("could not write the model cache %s (%s); using the model without a cache", folder, err)
        return model, tokenizer
    log.info("wrote de-quantised cache %s", folder)
    return None
