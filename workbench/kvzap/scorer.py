"""A KVzap scorer against a loaded model: the model's identity and shape, loading a scorer and checking that it
fits (torch). Used by training (to record what it trained on) and by the KVzap press (to find and check one)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from kvpress.presses.kvzap_press import KVzapModel

from workbench.kvzap import store


class ScorerMismatch(ValueError):
    """A scorer made for another shape of model than the one evaluated."""


@dataclass(frozen=True)
class Shape:
    n_layers: int
    hidden_size: int
    n_kv_heads: int

    def text(self) -> str:
        return f"{self.n_layers} layers, hidden size {self.hidden_size}, {self.n_kv_heads} KV heads"


def _text_config(model):
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def model_shape(model) -> Shape:
    c = _text_config(model)
    return Shape(int(c.num_hidden_layers), int(c.hidden_size), int(getattr(c, "num_key_value_heads", None) or c.num_attention_heads))


def scorer_shape(scorer: KVzapModel) -> Shape:
    c = scorer.config
    return Shape(int(c.n_modules), int(c.input_dim), int(c.output_dim))


def fingerprint(model) -> str:
    """Name, shapes and a digest of a few weights (cast to bfloat16, so a float32 and a bfloat16 load of the same
    weights agree): a scorer is found only for the weights it was trained on."""
    c = _text_config(model)
    lm = model.model.language_model if hasattr(model.model, "language_model") else model.model
    digest = hashlib.sha256(json.dumps({
        "name": str(getattr(model.config, "name_or_path", "")).rstrip("/").split("/")[-1],
        "architecture": type(model).__name__, "shape": model_shape(model).__dict__,
        "vocab": int(getattr(c, "vocab_size", 0) or 0)}, sort_keys=True).encode())
    for weight in (lm.embed_tokens.weight[:16], lm.layers[0].self_attn.k_proj.weight[:16], lm.layers[-1].self_attn.v_proj.weight[:16]):
        digest.update(weight.detach().to("cpu", torch.bfloat16).view(torch.int16).numpy().tobytes())
    return digest.hexdigest()[:16]


def check_fits(scorer: KVzapModel, model, where: str) -> None:
    """Refuse a scorer whose shape is not the model's, naming both."""
    have, want = scorer_shape(scorer), model_shape(model)
    if have != want:
        raise ScorerMismatch(f"the KVzap scorer {where} was made for a model of {have.text()}; the evaluated model has "
                             f"{want.text()}: train one for it with `{store.train_command(spec_hint(model))}`")


def spec_hint(model) -> str:
    """The spec that names this loaded model, for messages: an embedded model by its name (it loads from a cache
    folder of that name), else the folder or hub id it was loaded from."""
    from workbench.models.spec import EMBEDDED_MODELS

    path = str(getattr(model.config, "name_or_path", "") or "MODEL").rstrip("/")
    name = path.split("/")[-1]
    return name if name in EMBEDDED_MODELS else path


def load(path: str | Path) -> KVzapModel:
    """A saved scorer (``save_pretrained`` folder: config.json + safetensors), in eval mode."""
    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: no KVzap scorer there (a scorer folder holds config.json and model.safetensors)")
    return KVzapModel.from_pretrained(str(folder)).eval()


def describe(folder: Path) -> str:
    """One line saying which scorer this is: its folder and, where recorded, what it was trained on and its fit."""
    record = store.read_record(folder)
    if not record:
        return f"KVzap scorer {folder}"
    fit = (record.get("held_out") or {}).get("mean_r2")
    data = ", ".join(d.get("dataset", "?") for d in record.get("data", []))
    return (f"KVzap {record.get('kind', '?')} scorer {folder} (trained for {record['model'].get('spec')} on {data}"
            + (f", held-out R² {fit:.2f}" if isinstance(fit, (int, float)) else "") + ")")
