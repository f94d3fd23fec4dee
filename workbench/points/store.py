"""Where trained point classifiers live and how they are found (no torch: the CLI and the registry read it).

Layout under the user data directory (``models.spec.data_root()``)::

    points/<model slug>/<labels>-layer<L>/        a finished classifier: classifier.safetensors + config.json
                                                  (model fingerprint, layer, threshold, metrics, training data)
    points/<model slug>/.<labels>-layer<L>.work/  a training in progress: its settings and one features file per
                                                  text already run through the model, so a killed training resumes

A classifier is found for a loaded model by the model's fingerprint (``kvzap.scorer.fingerprint``: name, shapes
and a digest of a few weights), so it is used only with the weights whose hidden states it was trained on.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from workbench.atomic_write import read_json_or_none as read_json
from workbench.atomic_write import write_json_atomically  # noqa: F401  (callers use store.write_json_atomically)
from workbench.families.base import UnsupportedMethod
from workbench.kvzap.store import model_slug
from workbench.models.spec import data_root

CONFIG, WEIGHTS = "config.json", "classifier.safetensors"
FORMAT = 1
LABELS = ("rule", "api")


class Cancelled(RuntimeError):
    """The training was cancelled; the features computed so far are kept."""


class TrainingBusy(RuntimeError):
    """Another process is training the same classifier."""


class CheckpointError(ValueError):
    """A classifier checkpoint that cannot be used: missing or damaged files, or made for another model. One line
    naming the folder and what is wrong."""


class NoClassifier(UnsupportedMethod):
    """No classifier for the loaded model here: the cell is unavailable, and the message gives the command."""


def store_root() -> Path:
    return data_root() / "points"


def name(labels: str, layer: int) -> str:
    return f"{labels}-layer{layer}"


def classifier_dir(spec: str, labels: str, layer: int) -> Path:
    return store_root() / model_slug(spec) / name(labels, layer)


def work_dir(spec: str, labels: str, layer: int) -> Path:
    return store_root() / model_slug(spec) / f".{name(labels, layer)}.work"


def train_command(spec: str) -> str:
    quoted = spec if re.fullmatch(r"[A-Za-z0-9._/:-]+", spec) else json.dumps(spec)
    return f"workbench train-points --model {quoted}"





def check_files(folder: str) -> None:
    """A classifier folder a plan names is whole: its config.json a point classifier's, its weights whole safetensors
    (headers only, no torch). Said by the preflight, not by every cell after the model loaded. Raises CheckpointError;
    what fits which model is checked when it loads (classifier.load)."""
    from safetensors import SafetensorError, safe_open

    path = Path(folder).expanduser()
    config = read_json(path / CONFIG)
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{path / CONFIG}: missing, unreadable or not a point classifier's config (format {FORMAT})")
    try:
        with safe_open(str(path / WEIGHTS), framework="numpy"):
            pass
    except FileNotFoundError:
        raise CheckpointError(f"{path / WEIGHTS}: missing (the classifier's weights)") from None
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path / WEIGHTS}: damaged, not a safetensors file ({str(err).splitlines()[0][:120]})") from None


def find(fingerprint: str) -> Path | None:
    """The newest finished classifier trained on the model with this fingerprint, or None."""
    root = store_root()
    if not root.is_dir():
        return None
    found = []
    for folder in root.glob("*/*"):
        config = read_json(folder / CONFIG) if not folder.name.startswith(".") else None
        if isinstance(config, dict) and isinstance(config.get("model"), dict) \
                and config["model"].get("fingerprint") == fingerprint and (folder / WEIGHTS).is_file():
            found.append((str(config.get("created_at", "")), str(folder), folder))
    return max(found)[2] if found else None
