"""The point classifier and its checkpoint (torch).

An MLP on one hidden state of the frozen model (seed 003's head: Linear → ReLU → Dropout → Linear to one logit),
with the training features' mean and standard deviation folded in as buffers, so it takes raw hidden states. Saved
as ``classifier.safetensors`` + ``config.json`` (format, model fingerprint and shape, layer, threshold, metrics,
what it was trained on). Loading checks everything a damaged or foreign checkpoint could get wrong and says so in
one line (:class:`store.CheckpointError`), naming the folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from workbench.atomic_write import publish_folder, staging_folder
from workbench.points import store
from workbench.points.store import CheckpointError


class PointMLP(torch.nn.Module):
    def __init__(self, hidden_size: int, hidden_dim: int, dropout: float = 0.1):
        super().__init__()
        self.register_buffer("mean", torch.zeros(hidden_size))
        self.register_buffer("std", torch.ones(hidden_size))
        self.net = torch.nn.Sequential(torch.nn.Linear(hidden_size, hidden_dim), torch.nn.ReLU(), torch.nn.Dropout(dropout),
                                       torch.nn.Linear(hidden_dim, 1))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits (...,) for hidden states (..., hidden_size)."""
        return self.net((hidden.float() - self.mean) / self.std).squeeze(-1)

    @torch.inference_mode()
    def probabilities(self, hidden: torch.Tensor, rows: int = 8192) -> torch.Tensor:
        self.eval()
        flat = hidden.reshape(-1, hidden.shape[-1])
        out = torch.cat([torch.sigmoid(self(flat[i : i + rows])) for i in range(0, flat.shape[0], rows)]) if len(flat) \
            else torch.empty(0)
        return out.reshape(hidden.shape[:-1])


def save(mlp: PointMLP, config: dict, final: Path) -> Path:
    """Weights and config into a fresh folder beside ``final``, then swapped in: a kill leaves the old classifier or
    the new one, never half of one."""
    final = Path(final)
    fresh = staging_folder(final)
    fresh.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in mlp.state_dict().items()}, str(fresh / store.WEIGHTS))
    store.write_json_atomically(fresh / store.CONFIG, config)
    return publish_folder(fresh, final)


def _config(folder: Path) -> dict:
    path = folder / store.CONFIG
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no point classifier there (a classifier folder holds {store.CONFIG} and "
                              f"{store.WEIGHTS})")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing (a point classifier folder holds {store.CONFIG} and {store.WEIGHTS})") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable JSON file ({type(err).__name__})") from None
    if not isinstance(config, dict) or config.get("format") != store.FORMAT:
        raise CheckpointError(f"{path}: field 'format': expected {store.FORMAT} (a point classifier's config), got "
                              f"{config.get('format') if isinstance(config, dict) else type(config).__name__!r}")
    model = config.get("model")
    checks = [("model", isinstance(model, dict)),
              ("model.fingerprint", isinstance(model, dict) and isinstance(model.get("fingerprint"), str)),
              ("model.hidden_size", isinstance(model, dict) and _whole(model.get("hidden_size"))),
              ("model.n_layers", isinstance(model, dict) and _whole(model.get("n_layers"))),
              ("layer", _whole(config.get("layer"))),
              ("hidden_dim", _whole(config.get("hidden_dim"))),
              ("threshold", isinstance(config.get("threshold"), (int, float)) and not isinstance(config.get("threshold"), bool)
               and 0 < config["threshold"] < 1)]
    for name, ok in checks:
        if not ok:
            raise CheckpointError(f"{path}: field {name!r} is missing or malformed")
    return config


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def load(folder: str | Path, model=None) -> tuple[PointMLP, dict]:
    """(classifier in eval mode, its config). With ``model``: refused unless it was trained on that model's
    weights (fingerprint) and its layer exists there. Raises CheckpointError."""
    folder = Path(folder).expanduser()
    config = _config(folder)
    weights = folder / store.WEIGHTS
    try:
        tensors = load_file(str(weights))
    except FileNotFoundError:
        raise CheckpointError(f"{weights}: missing (the classifier's weights)") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{weights}: damaged, not a safetensors file ({str(err).splitlines()[0][:120]})") from None
    hidden, dim = config["model"]["hidden_size"], config["hidden_dim"]
    mlp = PointMLP(hidden, dim)
    want = {k: tuple(v.shape) for k, v in mlp.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in tensors.items()}
    if have != want:
        raise CheckpointError(f"{weights}: its tensors {sorted(have.items())} do not make the classifier its config "
                              f"describes (hidden size {hidden}, hidden_dim {dim})")
    mlp.load_state_dict(tensors)
    if not all(torch.isfinite(t).all() for t in tensors.values()):
        raise CheckpointError(f"{weights}: holds non-finite weights")
    if model is not None:
        check_fits(config, model, folder)
    return mlp.eval(), config


def check_fits(config: dict, model, folder: Path) -> None:
    from workbench.kvzap.scorer import fingerprint, model_shape, spec_hint
    from workbench.points.features import n_hidden_states

    shape = model_shape(model)
    trained = config["model"]
    if trained["hidden_size"] != shape.hidden_size or trained["n_layers"] != shape.n_layers:
        raise CheckpointError(f"{folder}: the point classifier was trained for a model of {trained['n_layers']} layers, "
                              f"hidden size {trained['hidden_size']}; the loaded model has {shape.n_layers} layers, hidden "
                              f"size {shape.hidden_size}: train one with `{store.train_command(spec_hint(model))}`")
    mine = fingerprint(model)
    if trained["fingerprint"] != mine:
        raise CheckpointError(f"{folder}: the point classifier was trained on other weights ({trained.get('spec', '?')}, "
                              f"fingerprint {trained['fingerprint']}) than the loaded model's (fingerprint {mine}): train "
                              f"one with `{store.train_command(spec_hint(model))}`")
    if config["layer"] >= n_hidden_states(model):
        raise CheckpointError(f"{folder}: field 'layer' {config['layer']} is not a hidden state of this model")


def for_model(model, classifier: str | Path | None = None) -> tuple[PointMLP, dict, Path]:
    """The classifier named by ``classifier`` (a folder), else the newest trained for this model's weights.
    Raises store.NoClassifier when there is none (the message gives the command), CheckpointError when the one
    found cannot be used."""
    if classifier:
        folder = Path(classifier).expanduser()
    else:
        from workbench.kvzap.scorer import fingerprint, spec_hint

        folder = store.find(fingerprint(model))
        if folder is None:
            raise store.NoClassifier(f"no point classifier trained for {spec_hint(model)} in {store.store_root()}: train "
                                     f"one with `{store.train_command(spec_hint(model))}` (minutes on a CPU), or name "
                                     "one with the method's 'classifier' parameter")
    mlp, config = load(folder, model)
    return mlp, config, folder
