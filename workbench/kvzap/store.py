"""Where trained KVzap scorers live and how they are found (no torch: the plan, preflight and the CLI read it).

Layout under the user data directory (``models.spec.data_root()``)::

    kvzap/<model slug>/<kind>/            a finished scorer: config.json + model.safetensors (KVzapModel's
                                          save_pretrained) and record.json (what it was trained on, how well it fits)
    kvzap/<model slug>/.<kind>.work/      a training in progress: its settings and one file per text already
                                          scored, so a killed training resumes where it stopped

A scorer is found for a loaded model by the model's *fingerprint* (its name, shapes and a digest of a few
weights: ``scorer.fingerprint``), so it is used only with the weights it was trained on, whatever the spec
that loaded them.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from workbench.atomic_write import read_json_or_none as read_json  # noqa: F401  (callers use store.read_json)
from workbench.atomic_write import write_json_atomically  # noqa: F401  (callers use store.write_json_atomically)
from workbench.models.spec import EMBEDDED_MODELS, data_root

KINDS = ("mlp", "linear")
DEFAULT_DATA = ("tinystories", "paulgraham")  # not wikitext2: kv-compare evaluates there, on text the scorer never saw


class TrainingBusy(RuntimeError):
    """Another process is training the same scorer."""


class Cancelled(RuntimeError):
    """The training was cancelled; the texts scored so far are kept."""

RECORD = "record.json"


def store_root() -> Path:
    return data_root() / "kvzap"


def model_slug(spec: str) -> str:
    """A folder name for a model spec: the embedded name or hub id as written (``/`` → ``--``); a local path by
    its last part plus a digest of the full path (two folders called ``model`` stay apart)."""
    text = spec.strip()
    if text.lower() in EMBEDDED_MODELS:
        return text.lower()
    looks_local = text.startswith(("/", "./", "../", "~")) or text.lower().endswith(".gguf") or Path(text).expanduser().exists()
    if looks_local:
        full = str(Path(text).expanduser().resolve())
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(full).name)[:60] or "model"
        return f"{stem}-{hashlib.sha256(full.encode()).hexdigest()[:10]}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.replace("/", "--"))[:120]


def scorer_dir(spec: str, kind: str) -> Path:
    return store_root() / model_slug(spec) / kind


def work_dir(spec: str, kind: str) -> Path:
    return store_root() / model_slug(spec) / f".{kind}.work"


def train_command(spec: str, kind: str = "mlp") -> str:
    """The one command that trains a scorer for ``spec``."""
    quoted = spec if re.fullmatch(r"[A-Za-z0-9._/:-]+", spec) else json.dumps(spec)
    return f"workbench train-kvzap --model {quoted}" + ("" if kind == "mlp" else f" --kind {kind}")


def read_record(folder: Path) -> dict | None:
    """The record of a finished scorer folder, or None (no record, unreadable, or not a scorer record)."""
    try:
        data = json.loads((folder / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("model"), dict) else None



def find(fingerprint: str, kind: str) -> Path | None:
    """The newest finished scorer of ``kind`` trained on the model with this fingerprint, or None."""
    root = store_root()
    if not root.is_dir():
        return None
    found = []
    for folder in root.glob(f"*/{kind}"):
        record = read_record(folder)
        if record and record["model"].get("fingerprint") == fingerprint and (folder / "config.json").is_file():
            found.append((str(record.get("created_at", "")), folder))
    return max(found)[1] if found else None
