"""Training a soft compressor against the frozen evaluated model (torch): ``train(config, on_event, cancel, restart)``.

The model's weights stay frozen (optionally with LoRA adapters through ``peft``); the compressor's k soft vectors
are fed as input embeddings ahead of the continuation, and the loss mixes the terms of ``losses`` with the plan's
weights. AdamW with two parameter groups (compressor, LoRA), transformers' cosine schedule with warm-up, gradient
accumulation, torch.autocast bfloat16 on a GPU, seeds. The data order is a function of (seed, step), and a
checkpoint holds the optimiser, scheduler and RNG state, so a resumed run continues the curve it left.

Events (plain JSON-safe dicts, for the CLI's progress lines and the TUI's Train view):
``start``, ``step``, ``eval``, ``checkpoint``, ``done`` (see ``workbench train --help``).
"""

from __future__ import annotations

import math
import random
import threading
import time
from pathlib import Path
from typing import Callable

import torch

from workbench.learned import architectures, checkpoint, losses, qa, soft, store
from workbench.learned.config import TrainConfig, config_from_record
from workbench.learned.store import Cancelled, CheckpointError


class RunMismatch(ValueError):
    """A run of this name exists with another plan (resume needs the same plan, or --restart)."""


def _require_hub(cfg: TrainConfig) -> None:
    """A Hugging Face dataset (seed 002's SQuAD v1.1, ``hf:squad``) needs the hub: out of reach, the run stops here
    saying so rather than training on something else."""
    from workbench import datasets

    if cfg.dataset.startswith("hf:"):
        from workbench.hub import hub_reachable

        if not hub_reachable():
            raise datasets.DatasetError(
                f"{cfg.dataset}: the Hugging Face hub is out of reach, so this QA set cannot be downloaded here and the "
                "run cannot train on it; offline, train on the bundled text (\"dataset\": \"wikitext2\") with the "
                "language-modelling loss, or save the set as a .jsonl file and name that path")


def _examples(lm, cfg: TrainConfig) -> tuple[list, list, int]:
    """(training examples, held-out examples, examples skipped): language-modelling windows, or QA rows for the qa
    objective (``qa.qa_rows``)."""
    _require_hub(cfg)
    if cfg.objective == "qa":
        return qa.qa_rows(cfg, lm.tokenizer)
    train, held = _windows(lm, cfg)
    return train, held, 0


def _windows(lm, cfg: TrainConfig) -> tuple[list, list]:
    """(training windows, held-out windows) of context + continuation + 1 tokens, disjoint."""
    from workbench import datasets

    held = datasets.lm_samples(cfg.dataset, lm.tokenizer, cfg.held_out, cfg.context_tokens, cfg.continuation_tokens,
                               cfg.held_out_seed)
    n = datasets.window_count(cfg.dataset, lm.tokenizer, cfg.context_tokens, cfg.continuation_tokens)
    every = datasets.lm_samples(cfg.dataset, lm.tokenizer, n, cfg.context_tokens, cfg.continuation_tokens, 0)
    held_ids = {s.input_ids for s in held}
    train = sorted((s for s in every if s.input_ids not in held_ids), key=lambda s: int(s.sample_id.rsplit("offset", 1)[1]))
    if len(train) < cfg.batch_size:
        raise datasets.DatasetError(f"{cfg.dataset}: {len(train)} training windows of {cfg.context_tokens}+"
                                    f"{cfg.continuation_tokens}+1 tokens after {cfg.held_out} held out; fewer than a batch")
    return train, held


def _batch_indices(n_windows: int, seed: int, step: int, micro: int, cfg: TrainConfig) -> list[int]:
    """The windows of micro-batch ``micro`` of optimiser step ``step``: epochs of a seeded permutation, so the
    order depends on (seed, step) alone and a resumed run reads what the uninterrupted one would."""
    out = []
    start = (step * cfg.grad_accum + micro) * cfg.batch_size
    for pos in range(start, start + cfg.batch_size):
        epoch, offset = divmod(pos, n_windows)
        order = list(range(n_windows))
        random.Random(seed * 100_003 + epoch).shuffle(order)
        out.append(order[offset])
    return out


def _ids(samples: list, device) -> torch.Tensor:
    return torch.tensor([s.input_ids for s in samples], dtype=torch.long, device=device)


def compute_loss(model, compressor, ids: torch.Tensor, cfg: TrainConfig) -> tuple[torch.Tensor, dict]:
    """The weighted loss of one micro-batch of windows (B, C+T+1) and its terms (floats, nats)."""
    c, w = cfg.context_tokens, cfg.loss_weights
    ctx, cont = ids[:, :c], ids[:, c:]
    b = ids.shape[0]
    s = soft.soft_vectors(model, compressor, ctx)
    k = s.shape[1]
    g = cfg.generation_prefix_tokens
    rows, need_gen = [cont[:, :-1]], w["generation"] > 0
    gen_cont = None
    if need_gen:
        generated = losses.greedy_tokens(model, s.detach(), cont[:, :1], g)
        gen_cont = losses.generation_row(cont, generated)
        rows.append(gen_cont[:, :-1])
    # Teacher-forcing and generation rows have one length: one forward pass over 2B rows.
    soft_rows = s.repeat(len(rows), 1, 1)
    out = soft.forward_rows(model, soft_rows, torch.cat(rows, dim=0), hidden=w["contrastive"] > 0)
    logits = out.logits
    terms: dict[str, torch.Tensor] = {}
    terms["teacher_forcing"] = losses.teacher_forcing_nll(logits[:b], cont, k).mean()
    if need_gen:
        terms["generation"] = losses.generation_nll(logits[b:], cont, k, g).mean()
    if w["contrastive"] > 0 or w["distillation"] > 0:
        with torch.no_grad():
            teacher = model(input_ids=ids[:, :c] if w["distillation"] == 0 else ids[:, :-1], output_hidden_states=w["contrastive"] > 0, use_cache=False)
        if w["contrastive"] > 0:
            summary = out.hidden_states[-1][:b, :k].float().mean(dim=1)
            target = teacher.hidden_states[-1][:, :c].float().mean(dim=1)
            terms["contrastive"] = losses.contrastive_infonce(summary, target, cfg.contrastive_temperature)
        if w["distillation"] > 0:
            t = cont.shape[1] - 1
            terms["distillation"] = losses.distillation_kl(teacher.logits, c, logits[:b], k, t).mean()
    total = sum(w[name] * value for name, value in terms.items())
    report = {name: float(terms[name].detach()) if name in terms else 0.0 for name in ("teacher_forcing", "generation", "contrastive")}
    if "distillation" in terms:
        report["distillation"] = float(terms["distillation"].detach())
    return total, report


@torch.no_grad()
def validation_loss(model, compressor, windows: list, cfg: TrainConfig, device) -> float:
    """Mean teacher-forcing NLL (nats/token) of the held-out windows' continuations given the soft vectors."""
    total, n = 0.0, 0
    for i in range(0, len(windows), cfg.batch_size):
        ids = _ids(windows[i:i + cfg.batch_size], device)
        cont = ids[:, cfg.context_tokens:]
        with _autocast(device):
            s = soft.soft_vectors(model, compressor, ids[:, :cfg.context_tokens])
            logits = soft.forward_rows(model, s, cont[:, :-1]).logits
        total += float(losses.teacher_forcing_nll(logits, cont, s.shape[1]).sum())
        n += ids.shape[0]
    return total / n


def _autocast(device):
    if torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def _versions(lm) -> dict:
    from workbench import environment

    try:
        env = environment.collect(lm)
        env["packages"]["peft"] = environment._version("peft")
        return env
    except Exception:  # noqa: BLE001 — versions are informative; a probe failing must not stop a run
        import sys

        return {"python": sys.version.split()[0], "torch": torch.__version__}


def check_run(cfg: TrainConfig, restart: bool) -> None:
    """Refuse a run of this name that was started with another plan (unless ``restart``); writes nothing."""
    folder = store.run_dir(cfg.name)
    config_path = folder / store.CONFIG
    if restart or not config_path.exists():
        return
    old = store.read_json(config_path)
    if not isinstance(old, dict):  # said as what it is, not as "another plan"
        raise CheckpointError(f"{config_path}: unreadable (not a JSON object); pass --restart to discard the run "
                              f"{cfg.name!r} and start it again")
    try:
        before = config_from_record(old, str(config_path)).to_dict()
    except Exception:  # noqa: BLE001 — a config this version cannot read is a mismatch too
        before = None
    now = cfg.to_dict()
    if before != now:
        changed = sorted(k for k in now.keys() | (before or {}).keys() if (before or {}).get(k) != now.get(k)) \
            if before is not None else []
        what = ("; it differs in " + ", ".join(f"{k} ({before.get(k)!r} then, {now.get(k)!r} now)" for k in changed)) \
            if changed else ""
        raise RunMismatch(f"{config_path}: a run named {cfg.name!r} was started with another plan{what}; resume it with "
                          "the same plan, rename this one, or pass --restart to discard it")
    last = store.last_checkpoint(folder)
    if last is not None:  # the checkpoint it will resume from is whole: said before the model loads
        state = store.read_json(last / store.STATE)
        if not isinstance(state, dict):
            raise CheckpointError(f"{last / store.STATE}: not a soft-compressor checkpoint (unreadable)")
        store.check_tensor_files(last, state, optimizer=True)


def prepare_run(cfg: TrainConfig, restart: bool) -> tuple[Path, Path | None]:
    """(run folder, checkpoint to resume from or None). A run of this name with another plan is refused.

    Called once the model has loaded: a plan whose model or device cannot be loaded neither discards the run it
    would restart nor leaves a config.json behind that its corrected plan would then be refused against."""
    check_run(cfg, restart)
    folder = store.run_dir(cfg.name)
    if restart and folder.exists():
        import shutil

        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    store.write_json_atomically(folder / store.CONFIG, cfg.to_dict())
    return folder, store.last_checkpoint(folder)


def train(config: TrainConfig, on_event: Callable[[dict], None] | None = None, cancel: threading.Event | None = None,
          restart: bool = False) -> dict:
    """Train (or resume) the run ``config.name``; returns its record (also written to record.json).

    Raises CheckpointError (a corrupted or mismatched checkpoint, naming the file), RunMismatch, Cancelled,
    ModelLoadError / DatasetError (what the plan names cannot be loaded)."""
    from transformers import get_cosine_schedule_with_warmup

    from workbench import models
    from workbench.kvzap.scorer import fingerprint

    cfg = config
    emit = on_event or (lambda e: None)
    cancel = cancel or threading.Event()
    started = time.monotonic()
    check_run(cfg, restart)  # a mismatched run is refused before the model loads (seconds)
    lm = models.load_model(cfg.model, cfg.device, cfg.dtype)
    folder, resume = prepare_run(cfg, restart)
    device = lm.model.device
    model = lm.model
    model.requires_grad_(False)
    fp = fingerprint(model)
    d = int(model.get_input_embeddings().weight.shape[1])
    torch.manual_seed(cfg.seed)
    compressor = architectures.build(cfg.architecture, d, cfg.rate, cfg.context_tokens).to(device)
    if cfg.lora is not None:
        model = soft.add_lora(model, cfg.lora)
    lora_params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": list(compressor.parameters()), "lr": cfg.lr_compressor, "name": "compressor"}]
    if lora_params:
        groups.append({"params": lora_params, "lr": cfg.lr_lora, "name": "lora"})
    optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, cfg.warmup_steps, max(1, cfg.steps))
    curves: dict = {"train": [], "val": []}
    step0 = 0
    if resume is not None:
        loaded, lora_tensors, state = checkpoint.load_compressor(resume, model, fp, device)
        if loaded.spec() != compressor.spec():
            raise CheckpointError(f"{resume / store.STATE}: a {loaded.spec()} compressor, the plan asks for {compressor.spec()}")
        compressor.load_state_dict(loaded.state_dict())
        if lora_tensors is not None and cfg.lora is not None:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(model, lora_tensors)
        checkpoint.load_training_state(resume, optimizer, scheduler)
        step0, curves = state["step"], state.get("curves") or curves
    train_windows, held, skipped = _examples(lm, cfg)
    val_windows = held[:cfg.eval_windows]
    if cfg.objective == "qa":
        def batch_loss(rows):
            return qa.compute_loss(model, compressor, rows, cfg, device)

        def held_out_loss():
            return qa.validation_loss(model, compressor, val_windows, cfg, device)

        def held_out_scores():
            scores = qa.answer_scores(lm, model, compressor, val_windows)
            return {"val_f1": scores["f1"], "val_em": scores["em"]}
    else:
        def batch_loss(rows):
            return compute_loss(model, compressor, _ids(rows, device), cfg)

        def held_out_loss():
            return validation_loss(model, compressor, val_windows, cfg, device)

        def held_out_scores():
            return {}
    n_params = {"compressor": compressor.n_params(), "lora": sum(p.numel() for p in lora_params)}
    emit({"kind": "start", "run": cfg.name, "total_steps": cfg.steps, "resumed_from": step0 if resume else None,
          "params": n_params})
    model_info = {"spec": cfg.model, "fingerprint": fp, "d": d}

    def save_checkpoint(step: int) -> Path:
        state = {"model": model_info, "total_steps": cfg.steps, "curves": curves, "lora": cfg.to_dict()["lora"],
                 "config": cfg.to_dict()}
        path = checkpoint.save(folder, step, compressor, soft.lora_state(model) if cfg.lora else None, optimizer, scheduler,
                               state)
        emit({"kind": "checkpoint", "step": step, "path": str(path)})
        return path

    def evaluate(step: int) -> None:
        compressor.eval()
        model.eval()
        v = held_out_loss()
        entry = {"step": step, "val_loss": v, "val_ppl": math.exp(v), **held_out_scores()}
        compressor.train()
        if cfg.lora is not None:
            model.train()  # back to LoRA dropout: a resumed run (which starts in train mode) follows the same curve
        curves["val"] = [e for e in curves["val"] if e["step"] != step] + [entry]
        emit({"kind": "eval", **entry})

    if step0 == 0 and not curves["val"]:
        evaluate(0)  # the untrained compressor's validation loss: where the curve starts
    compressor.train()
    if cfg.lora is not None:
        model.train()  # LoRA dropout; the base model has no dropout of its own
    loop_start, path = time.monotonic(), resume
    for step in range(step0, cfg.steps):
        if cancel.is_set():
            raise Cancelled(f"cancelled at step {step} of {cfg.steps}; the last checkpoint is kept: run it again to resume")
        terms_sum: dict[str, float] = {}
        loss_sum = 0.0
        for micro in range(cfg.grad_accum):
            rows = [train_windows[i] for i in _batch_indices(len(train_windows), cfg.seed, step, micro, cfg)]
            with _autocast(device):
                loss, terms = batch_loss(rows)
            (loss / cfg.grad_accum).backward()
            loss_sum += float(loss.detach()) / cfg.grad_accum
            for name, value in terms.items():
                terms_sum[name] = terms_sum.get(name, 0.0) + value / cfg.grad_accum
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], cfg.max_grad_norm)
        lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        elapsed = time.monotonic() - loop_start
        rate = (done - step0) * cfg.batch_size * cfg.grad_accum / max(elapsed, 1e-9)
        eta = (cfg.steps - done) * cfg.batch_size * cfg.grad_accum / rate if rate > 0 else None
        curves["train"].append({"step": done, "loss": loss_sum, "terms": terms_sum})
        emit({"kind": "step", "step": done, "total_steps": cfg.steps, "loss": loss_sum, "terms": terms_sum,
              "lr": {"compressor": lrs["compressor"], "lora": lrs.get("lora", 0.0)}, "samples_per_s": rate, "eta_s": eta})
        if done % cfg.eval_every == 0 or done == cfg.steps:
            evaluate(done)
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            path = save_checkpoint(done)
    loop_seconds = time.monotonic() - loop_start
    trained_windows = (cfg.steps - step0) * cfg.batch_size * cfg.grad_accum
    if cfg.steps == 0 or path is None:
        path = save_checkpoint(cfg.steps)
    record = {
        "name": cfg.name, "config": cfg.to_dict(), "model": model_info, "environment": _versions(lm),
        "params": n_params, "k": architectures.soft_length(cfg.rate, cfg.context_tokens), "checkpoint": str(path),
        "windows": {"train": len(train_windows), "held_out": len(held), "validation": len(val_windows),
                    **({"skipped_longer_than_context": skipped} if cfg.objective == "qa" else {})},
        "curves": curves, "final_val_loss": curves["val"][-1]["val_loss"] if curves["val"] else None,
        "seconds": time.monotonic() - started, "training_seconds": loop_seconds,
        "samples_per_s": trained_windows / loop_seconds if trained_windows and loop_seconds > 0 else None, "threads": torch.get_num_threads(), "device": str(device),
        "resumed_from": step0 if resume else None,
        "peak_memory_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    store.write_json_atomically(folder / store.RECORD, record)
    emit({"kind": "done", "record": record})
    return record
