"""``workbench train PRESET|PLAN``: train a learned soft compressor (progress on stderr, the run's summary on stdout).

Exit codes: 0 trained and saved; 1 failed or interrupted (the last checkpoint is kept: run it again to resume);
2 bad input (the plan, a flag, or a corrupted or mismatched checkpoint — the message names the file).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

PROG = "workbench train"


def parser() -> argparse.ArgumentParser:
    from workbench.learned.config import train_preset_names
    from workbench.learned.store import store_root

    p = argparse.ArgumentParser(
        prog=PROG,
        description="Train a learned soft compressor (cross-attention, conv, pooling or gist: seed 002) that turns a "
                    "context into rate × context soft vectors read by the frozen evaluated model. Runs are kept in "
                    f"{store_root()}/<name>; a plan method {{\"name\": \"learned\", \"params\": {{\"checkpoint\": NAME}}}} "
                    "measures one beside the other methods. An interrupted run resumes from its last checkpoint. "
                    f"Training presets: {', '.join(train_preset_names()) or 'none'}.")
    p.add_argument("plan", nargs="?", metavar="PRESET|PLAN", help="a training preset's name or a training plan (JSON file)")
    p.add_argument("--restart", action="store_true", help="discard the run's checkpoints and start again")
    p.add_argument("--steps", type=int, default=None, metavar="N", help="override the plan's optimiser steps (0: save the "
                   "untrained compressor as a run)")
    p.add_argument("--name", default=None, help="override the run's name (a run folder per name)")
    p.add_argument("--list", action="store_true", help="list the trained runs and exit")
    p.add_argument("--json", action="store_true", help="print the run record as JSON")
    p.epilog = "workbench train --ablation GRID [--gpus N] [--ray [ADDRESS]] trains every run of an ablation grid (see --ablation -h)"
    return p


def _fmt_eta(seconds) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _progress():
    last = [0.0]

    def on_event(e: dict) -> None:
        kind = e["kind"]
        if kind == "start":
            resumed = f", resumed from step {e['resumed_from']}" if e.get("resumed_from") is not None else ""
            print(f"[train] {e['run']}: {e['total_steps']} steps, compressor {e['params']['compressor']:,} parameters, "
                  f"LoRA {e['params']['lora']:,}{resumed}", file=sys.stderr, flush=True)
        elif kind == "step":
            now = time.monotonic()
            if now - last[0] > 2.0 or e["step"] == e["total_steps"]:
                last[0] = now
                terms = " ".join(f"{k[:3]} {v:.3f}" for k, v in e["terms"].items())
                print(f"[step {e['step']}/{e['total_steps']}] loss {e['loss']:.4f} ({terms}) lr {e['lr']['compressor']:.2e} "
                      f"{e['samples_per_s']:.2f} samples/s, ETA {_fmt_eta(e['eta_s'])}", file=sys.stderr, flush=True)
        elif kind == "eval":
            answers = f", answer F1 {e['val_f1']:.3f} EM {e['val_em']:.3f}" if "val_f1" in e else ""
            print(f"[eval {e['step']}] validation NLL {e['val_loss']:.4f} nats/token, PPL {e['val_ppl']:.2f}{answers}", file=sys.stderr,
                  flush=True)
        elif kind == "checkpoint":
            print(f"[checkpoint {e['step']}] {e['path']}", file=sys.stderr, flush=True)

    return on_event


def summary(record: dict) -> str:
    cfg = record["config"]
    val = record["curves"]["val"]
    if cfg.get("objective") == "qa":
        shape = (f"contexts of up to {cfg['context_tokens']} tokens → rate × their length soft vectors; loss on the answer "
                 "after the question")
    else:
        shape = f"{cfg['context_tokens']} context tokens → {record['k']} soft vectors"
    lines = [f"run {record['name']}: {cfg['architecture']} at rate {cfg['rate']:g} ({shape}) on {cfg['dataset']}, "
             f"model {cfg['model']}",
             f"parameters: compressor {record['params']['compressor']:,}, LoRA {record['params']['lora']:,}; "
             f"{record['seconds'] / 60:.1f} min on {record['device']} ({record['threads']} threads)"
             + (f", {record['samples_per_s']:.2f} samples/s" if record.get("samples_per_s") else "")
             + (f", peak GPU memory {record['peak_memory_bytes'] / 2**30:.2f} GiB" if record.get("peak_memory_bytes") else ""),
             f"checkpoint: {record['checkpoint']}", ""]
    if any("val_f1" in v for v in val):  # the qa objective: greedy answers to a few held-out questions, scored as the task does
        def score(v, key):
            return f"{v[key]:6.3f}" if key in v else f"{'-':>6}"

        lines += [" step  val NLL  val PPL  ans F1  ans EM", "-----  -------  -------  ------  ------"]
        lines += [f"{v['step']:>5}  {v['val_loss']:7.4f}  {v['val_ppl']:7.2f}  {score(v, 'val_f1')}  {score(v, 'val_em')}"
                  for v in val]
    else:
        lines += [" step  val NLL  val PPL", "-----  -------  -------"]
        lines += [f"{v['step']:>5}  {v['val_loss']:7.4f}  {v['val_ppl']:7.2f}" for v in val]
    return "\n".join(lines)


def _failed(err: Exception) -> int:
    """A training that broke: one line, not a traceback (the checkpoints stay for a rerun); exit 1."""
    from workbench.secrets import scrub

    print(f"{PROG}: failed: {scrub(f'{type(err).__name__}: {err}'.splitlines()[0])}", file=sys.stderr)
    return 1


def main(argv: list[str]) -> int:
    if argv[:1] == ["--ablation"]:  # a grid of runs, one per GPU at a time (ablation_cli)
        from workbench.learned import ablation_cli

        return ablation_cli.main(argv[1:])
    args = parser().parse_args(argv)
    from workbench.learned import store

    if args.list and (args.plan or args.restart or args.steps is not None or args.name is not None):
        print(f"{PROG}: --list takes no plan and no training flag (it lists the runs and trains nothing)", file=sys.stderr)
        return 2
    if args.list:
        for r in store.list_runs():
            state = "finished" if r["finished"] else f"step {r['steps_done']}/{r['total_steps']}"
            print(f"{r['name']}\t{r['architecture']}\trate {r['rate']}\t{r['model']}\t{state}")
        return 0
    if not args.plan:
        print(f"{PROG}: name a training preset or plan (PRESET|PLAN), or --list", file=sys.stderr)
        return 2
    from workbench.learned.config import PlanError, load_train_plan, parse_train_config

    try:
        cfg = load_train_plan(args.plan)
        if args.steps is not None or args.name is not None:
            data = cfg.to_dict()
            if args.steps is not None:
                data["steps"] = args.steps
            if args.name is not None:
                data["name"] = args.name
            cfg = parse_train_config(data, "command line (--steps/--name)")
    except PlanError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 2
    from workbench.datasets import DatasetError
    from workbench.learned.store import CheckpointError
    from workbench.learned.train import Cancelled, RunMismatch, train
    from workbench.models.spec import ModelLoadError

    try:
        record = train(cfg, on_event=_progress(), restart=args.restart)
    except (CheckpointError, RunMismatch) as err:  # these name their file
        print(f"{PROG}: {err}", file=sys.stderr)
        return 2
    except (ModelLoadError, DatasetError) as err:  # what the plan names cannot be loaded here: say which field
        field = "model" if isinstance(err, ModelLoadError) else "dataset"
        print(f"{PROG}: {args.plan}: field '{field}': {err}", file=sys.stderr)
        return 2
    except ValueError as err:  # a device or dtype this machine lacks (models.spec.resolve_device_dtype)
        field = next((f for f in ("device", "dtype") if f in str(err).lower()), None)
        if field is not None:
            print(f"{PROG}: {args.plan}: field '{field}': {err}", file=sys.stderr)
            return 2
        return _failed(err)
    except Cancelled as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; the last checkpoint is kept, run it again to resume", file=sys.stderr)
        return 1
    except Exception as err:  # noqa: BLE001 — one line, not a traceback; the checkpoints stay for a rerun
        return _failed(err)
    print(json.dumps(record, indent=1) if args.json else summary(record))
    return 0
