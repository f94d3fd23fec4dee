"""Where trained soft compressors live and how a method's ``checkpoint`` finds one (no torch).

Layout under the user data directory (``models.spec.data_root()``)::

    learned/<run name>/config.json            the resolved training plan (a rerun must match it to resume)
    learned/<run name>/checkpoint-<step>/     compressor.safetensors (+ lora.safetensors), optimizer.safetensors,
                                              state.json (the compressor's shape, the model's fingerprint, the
                                              optimiser's groups, the scheduler's state, the curves so far)
    learned/<run name>/record.json            the finished run: config, versions, curves, parameter counts

A checkpoint folder is written under a temporary name and renamed into place, so a killed run leaves whole
checkpoints only. Nothing is pickled.
"""

from __future__ import annotations

import re
from pathlib import Path

from workbench.atomic_write import read_json_or_none as read_json
from workbench.atomic_write import write_json_atomically  # noqa: F401  (callers use store.write_json_atomically)
from workbench.models.spec import data_root

RECORD, CONFIG, STATE = "record.json", "config.json", "state.json"
COMPRESSOR, LORA, OPTIMIZER = "compressor.safetensors", "lora.safetensors", "optimizer.safetensors"
_CHECKPOINT = re.compile(r"checkpoint-(\d+)$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (missing, corrupted, or made for another model or shape); names the file."""


def store_root() -> Path:
    return data_root() / "learned"


def run_dir(name: str) -> Path:
    return store_root() / name


class Cancelled(RuntimeError):
    """The run was cancelled; its last checkpoint stays for a resume. (Here, not in the training module, so the app
    can tell a cancel from a failure without importing torch.)"""


def checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """A run's whole checkpoints, (step, folder), oldest first."""
    found = []
    if Path(folder).is_dir():
        for child in Path(folder).iterdir():
            m = _CHECKPOINT.match(child.name)
            if m and child.is_dir() and (child / STATE).is_file():
                found.append((int(m.group(1)), child))
    return sorted(found)


def last_checkpoint(folder: Path) -> Path | None:
    found = checkpoints(folder)
    return found[-1][1] if found else None





def check_tensor_files(folder: Path, state: dict, optimizer: bool = False) -> None:
    """Refuse a checkpoint whose tensor files are missing or not whole safetensors (a copy cut short, a stray file),
    so a plan naming it, or a run resuming from it, fails when it is read, not after the model has loaded and other
    cells have run. Reads the headers only (safetensors with numpy: no torch). Raises CheckpointError naming the file."""
    from safetensors import SafetensorError, safe_open

    needed = [COMPRESSOR] + ([LORA] if state.get("lora") or (Path(folder) / LORA).exists() else []) \
        + ([OPTIMIZER] if optimizer else [])  # a resume reads the optimiser's moments too
    for name in needed:
        path = Path(folder) / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing from the checkpoint")
        try:
            with safe_open(str(path), framework="numpy"):
                pass
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{path}: corrupted ({str(err).splitlines()[0][:160]})") from None


def list_runs() -> list[dict]:
    """Every run in the store: {name, folder, steps_done, total_steps, finished, architecture, rate, model}."""
    root = store_root()
    out = []
    if not root.is_dir():
        return out
    for folder in sorted(root.iterdir()):
        config = read_json(folder / CONFIG)
        if not isinstance(config, dict):
            continue
        last = checkpoints(folder)
        record = read_json(folder / RECORD)
        out.append({"name": folder.name, "folder": str(folder), "steps_done": last[-1][0] if last else 0,
                    "total_steps": config.get("steps"), "finished": isinstance(record, dict),
                    "architecture": config.get("architecture"), "rate": config.get("rate"), "model": config.get("model")})
    return out


def find(spec: str) -> Path:
    """The checkpoint folder a method's ``checkpoint`` names: a run name in the store (its last checkpoint), a run
    folder, or a checkpoint folder. Raises CheckpointError naming what was looked for."""
    text = spec.strip()
    path = Path(text).expanduser()
    looks_path = "/" in text or text.startswith((".", "~"))
    candidates = [path] if looks_path else [run_dir(text), path]
    for candidate in candidates:
        if (candidate / STATE).is_file():
            return candidate
        last = last_checkpoint(candidate)
        if last is not None:
            return last
        if candidate.is_dir() and (candidate / CONFIG).is_file():
            raise CheckpointError(f"{candidate}: the run has no checkpoint yet (train it: workbench train {candidate / CONFIG})")
    names = ", ".join(r["name"] for r in list_runs()) or "none"
    raise CheckpointError(f"no trained compressor {text!r} (a run name in {store_root()}, a run folder or a checkpoint "
                          f"folder); runs: {names}")
