"""Checkpoints of a soft-compressor run, in torch: safetensors for tensors, JSON for everything else (never pickle).

A checkpoint holds what a resumed run needs to continue the same curve — compressor (and LoRA) weights, AdamW's
moments, the scheduler's counters, torch's RNG state, the curves so far — and what evaluation needs to refuse a
mismatch: the compressor's shape and the fingerprint of the model it was trained on.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from workbench.learned import architectures, store
from workbench.learned.store import CheckpointError


def _flatten_optimizer(state_dict: dict) -> tuple[dict, dict]:
    """AdamW's state_dict → (tensors for safetensors, the rest as JSON)."""
    tensors, scalars = {}, {}
    for idx, slots in state_dict["state"].items():
        for name, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"state.{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{name}"] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state_dict["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _unflatten_optimizer(tensors: dict, meta: dict) -> dict:
    state: dict = {}
    for key, value in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    for key, value in meta.get("scalars", {}).items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def save(run_folder: Path, step: int, compressor, lora_state: dict | None, optimizer, scheduler, state: dict) -> Path:
    """Write ``checkpoint-<step>`` whole (a temporary folder renamed into place). Returns its path."""
    run_folder.mkdir(parents=True, exist_ok=True)
    target = run_folder / f"checkpoint-{step}"
    tmp = Path(tempfile.mkdtemp(prefix=f".checkpoint-{step}.", dir=run_folder))
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in compressor.state_dict().items()}, tmp / store.COMPRESSOR)
        if lora_state:
            save_file({k: v.detach().cpu().contiguous() for k, v in lora_state.items()}, tmp / store.LORA)
        opt_meta = None
        if optimizer is not None:
            tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
            tensors["rng.torch"] = torch.get_rng_state()
            save_file(tensors, tmp / store.OPTIMIZER)
        full = {**state, "step": step, "compressor": compressor.spec(), "n_params": compressor.n_params(),
                "optimizer": opt_meta, "scheduler": scheduler.state_dict() if scheduler is not None else None}
        (tmp / store.STATE).write_text(json.dumps(full, indent=1, allow_nan=False), encoding="utf-8")
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def read_state(folder: Path) -> dict:
    state = store.read_json(folder / store.STATE)
    if not isinstance(state, dict) or not isinstance(state.get("compressor"), dict) or not isinstance(state.get("step"), int):
        raise CheckpointError(f"{folder / store.STATE}: not a soft-compressor checkpoint (unreadable or missing fields)")
    return state


def _load_tensors(path: Path) -> dict:
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing from the checkpoint") from None
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: corrupted ({str(err).splitlines()[0][:160]})") from None


def load_compressor(folder: Path, model, fingerprint: str, device) -> tuple:
    """(compressor in eval mode on ``device``, LoRA tensors or None, state) from a checkpoint folder, refusing one made
    for another model (fingerprint) or another shape. Raises CheckpointError naming the file."""
    folder = Path(folder)
    state = read_state(folder)
    spec = state["compressor"]
    d = int(model.get_input_embeddings().weight.shape[1])
    trained_on = (state.get("model") or {})
    if trained_on.get("fingerprint") not in (None, fingerprint):
        raise CheckpointError(f"{folder / store.STATE}: trained on another model ({trained_on.get('spec')!r}, fingerprint "
                              f"{trained_on.get('fingerprint')}); the evaluated model's fingerprint is {fingerprint}")
    if spec.get("d") != d:
        raise CheckpointError(f"{folder / store.STATE}: made for embeddings of width {spec.get('d')}; the evaluated model's "
                              f"are {d} wide")
    try:
        compressor = architectures.build(spec["architecture"], d, float(spec["rate"]), int(spec["context_tokens"]))
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{folder / store.STATE}: {err}") from None
    tensors = _load_tensors(folder / store.COMPRESSOR)
    try:
        compressor.load_state_dict(tensors)
    except RuntimeError as err:  # other architecture or shapes: missing/unexpected keys, size mismatch
        first = str(err).splitlines()
        raise CheckpointError(f"{folder / store.COMPRESSOR}: does not fit a {spec['architecture']} compressor of rate "
                              f"{spec['rate']} ({' '.join(first[1:2] or first)[:200].strip()})") from None
    lora = _load_tensors(folder / store.LORA) if (folder / store.LORA).exists() else None
    return compressor.to(device).eval(), lora, state


def load_training_state(folder: Path, optimizer, scheduler) -> None:
    """Restore AdamW's moments, the scheduler's counters and torch's RNG from a checkpoint."""
    state = read_state(folder)
    tensors = _load_tensors(folder / store.OPTIMIZER)
    rng = tensors.pop("rng.torch", None)
    try:
        optimizer.load_state_dict(_unflatten_optimizer(tensors, state["optimizer"]))
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{folder / store.OPTIMIZER}: does not fit this run's optimiser ({err})") from None
    if scheduler is not None and state.get("scheduler"):
        scheduler.load_state_dict(state["scheduler"])
    if rng is not None:
        torch.set_rng_state(rng)
