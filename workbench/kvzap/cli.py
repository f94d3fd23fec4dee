"""``workbench train-kvzap``: train the KVzap surrogate scorer for a model (progress on stderr, the fit on stdout).

Exit codes: 0 trained and saved, 1 failed or cancelled (texts scored so far are kept: run it again to resume),
2 bad input (model spec, dataset, flag).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from workbench.kvzap import store


def _positive(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def _count(text: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    return int(text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="workbench train-kvzap",
        description="Train a KVzap scorer (a per-layer linear map or 2-layer MLP from hidden states to KVzip+ scores, "
                    "kvpress's KVzapModel) for a model, so the kvzap press runs offline. It is saved in the user data "
                    f"directory ({store.store_root()}), where the kvzap press finds it by the model's fingerprint. "
                    "A killed training resumes from the texts already scored when run again.")
    p.add_argument("--model", default="smollm2-135m", metavar="SPEC", help="embedded name, hub id, folder or .gguf (default: %(default)s)")
    p.add_argument("--data", nargs="+", default=list(store.DEFAULT_DATA), metavar="DATASET",
                   help="datasets to draw texts from (default: %(default)s)")
    p.add_argument("--kind", choices=("mlp", "linear"), default="mlp", help="scorer kind (default: %(default)s)")
    p.add_argument("--texts", type=_positive, default=16, help="training texts, all datasets together (default: %(default)s)")
    p.add_argument("--held-out", type=_count, default=4, help="texts held out to measure the fit (default: %(default)s)")
    p.add_argument("--tokens-per-text", type=_positive, default=500, help="tokens drawn from each text (default: %(default)s)")
    p.add_argument("--min-tokens", type=_positive, default=750, help="shortest text, tokens (default: %(default)s)")
    p.add_argument("--max-tokens", type=_positive, default=1250, help="longest text, tokens (default: %(default)s)")
    p.add_argument("--epochs", type=_positive, default=15, help="MLP epochs (default: %(default)s)")
    p.add_argument("--hidden-dim", type=_positive, default=512, help="MLP hidden size (default: %(default)s)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--seed", type=_count, default=0)
    p.add_argument("--restart", action="store_true", help="discard texts scored by an interrupted run instead of resuming")
    p.add_argument("--json", action="store_true", help="print the record as JSON instead of a table")
    return p


def _check(args) -> str | None:
    """Bad input as one line, before anything loads."""
    from workbench import datasets
    from workbench.models.spec import ModelLoadError, classify_model_spec, device_dtype_flags_error

    try:
        classify_model_spec(args.model)
    except ModelLoadError as err:
        return f"--model: {err}"
    for name in args.data:
        try:
            datasets.validate_dataset_spec(name)
        except ValueError as err:
            return f"--data {name}: {err}"
    bad = device_dtype_flags_error(args.device, args.dtype)
    if bad:
        return bad
    if args.min_tokens > args.max_tokens:
        return f"--min-tokens {args.min_tokens} is more than --max-tokens {args.max_tokens}"
    if args.tokens_per_text > args.min_tokens:
        return f"--tokens-per-text {args.tokens_per_text} is more than the shortest text (--min-tokens {args.min_tokens})"
    return None


def table(record: dict) -> str:
    """The fit per layer on held-out texts, and the sizes and times."""
    held = record["held_out"]
    fmt = lambda v: "-" if v is None else f"{v:.3f}"
    lines = [f"KVzap {record['kind']} scorer for {record['model']['spec']}: {record['folder']}",
             "data: " + ", ".join(f"{d['dataset']} ({d['texts_train']} + {d['texts_held_out']} held out)" for d in record["data"]) + "; "
             f"{record['samples_train']:,} training / {record['samples_held_out']:,} held-out tokens; {record['epochs']} epochs",
             f"time: targets {record['seconds']['targets'] / 60:.1f} min, fit {record['seconds']['fit'] / 60:.1f} min, "
             f"total {record['seconds']['total'] / 60:.1f} min", "", "layer      R²   Pearson r", "-----  ------  ---------"]
    lines += [f"{p['layer']:>5}  {fmt(p['r2']):>6}  {fmt(p['pearson_r']):>9}" for p in held["per_layer"]]
    lines += ["-----  ------  ---------", f" mean  {fmt(held['mean_r2']):>6}  {fmt(held['mean_pearson_r']):>9}"]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    bad = _check(args)
    if bad:
        print(f"workbench train-kvzap: {bad}", file=sys.stderr)
        return 2
    from workbench.datasets import DatasetError
    from workbench.kvzap.fit import FitSettings
    from workbench.kvzap.store import Cancelled, TrainingBusy
    from workbench.kvzap.train import TrainSettings, train
    from workbench.models.spec import ModelLoadError

    settings = TrainSettings(model=args.model, data=tuple(args.data), texts=args.texts, held_out=args.held_out,
                             min_tokens=args.min_tokens, max_tokens=args.max_tokens, tokens_per_text=args.tokens_per_text,
                             seed=args.seed, device=args.device, dtype=args.dtype,
                             fit=FitSettings(kind=args.kind, hidden_dim=args.hidden_dim, epochs=args.epochs, seed=args.seed))
    last = [0.0]

    def progress(stage, done, total, message):
        now = time.monotonic()
        if stage in ("load", "done") or done in (0, total) or now - last[0] > 0.5:
            last[0] = now
            print(f"[{stage} {done}/{total}] {message}", file=sys.stderr, flush=True)

    try:
        record = train(settings, on_progress=progress, restart=args.restart)
    except (ModelLoadError, DatasetError) as err:  # what the flags named cannot be loaded or is too small
        print(f"workbench train-kvzap: {err}", file=sys.stderr)
        return 2
    except (TrainingBusy, Cancelled) as err:
        print(f"workbench train-kvzap: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # noqa: BLE001 — one line, not a traceback; the scored texts stay for a rerun
        from workbench.secrets import scrub

        print(f"workbench train-kvzap: failed: {scrub(f'{type(err).__name__}: {err}'.splitlines()[0])}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("workbench train-kvzap: interrupted; the texts scored so far are kept, run it again to resume", file=sys.stderr)
        return 1
    print(json.dumps(record, indent=1) if args.json else table(record))
    return 0
