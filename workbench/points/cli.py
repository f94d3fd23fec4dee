"""``workbench train-points``: train the compression-point classifier for a model (progress on stderr, the
held-out scores on stdout).

Exit codes: 0 trained and saved, 1 failed or cancelled (the texts done so far are kept: run it again to resume),
2 bad input (model spec, flag, evaluator block or file).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from workbench.points import store


def _whole(minimum: int):
    def parse(text: str) -> int:
        if not text.isascii() or not text.lstrip("-").isdigit() or int(text) < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number of at least {minimum}, got {text!r}")
        return int(text)
    return parse


def _layer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number (−1: the last layer), got {text!r}") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="workbench train-points",
        description="Train the compression-point classifier (an MLP on the frozen model's hidden states, BCE with "
                    "balanced sampling) on GSM8K reference reasoning, for the learned-points decoding schedule. Labels: "
                    "the step-boundary rule (offline) or an API model's <COMP> markers. Saved in the user data directory "
                    f"({store.store_root()}), where the schedule finds it by the model's fingerprint. A killed training "
                    "resumes from the texts already done when run again.")
    p.add_argument("--model", default="smollm2-135m", metavar="SPEC", help="embedded name, hub id, folder or .gguf (default: %(default)s)")
    p.add_argument("--labels", choices=store.LABELS, default="rule",
                   help="rule: step boundaries, offline; api: an API model inserts <COMP> markers (default: %(default)s)")
    p.add_argument("--evaluator", metavar="JSON|FILE",
                   help="with --labels api: the API model, as a plan's evaluator block (inline JSON, a JSON file, or a "
                        "plan file whose 'evaluator' block is used), e.g. '{\"provider\": \"openai\", \"model\": \"gpt-4o-mini\"}'")
    p.add_argument("--max-cost", type=float, metavar="USD", help="with --labels api: stop before spending more than this")
    p.add_argument("--no-cache", action="store_true", help="with --labels api: ask again instead of using cached answers")
    p.add_argument("--texts", type=_whole(3), default=200,
                   help="GSM8K problems in all, cut 80/10/10 into training, validation and held-out (default: %(default)s)")
    p.add_argument("--layer", type=_layer, default=-1, help="index into the model's hidden states, −1 the last layer (default: %(default)s)")
    p.add_argument("--epochs", type=_whole(1), default=20, help="training epochs (default: %(default)s)")
    p.add_argument("--hidden-dim", type=_whole(1), default=256, help="MLP hidden size (default: %(default)s)")
    p.add_argument("--keep-calculator-spans", action="store_true",
                   help="keep GSM8K's <<…>> calculator spans in the solutions (the task's examples drop them)")
    p.add_argument("--seed", type=_whole(0), default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--restart", action="store_true", help="discard the texts done by an interrupted run instead of resuming")
    p.add_argument("--check", metavar="FOLDER", help="train nothing: check that the classifier in FOLDER is whole and fits "
                   "--model (loads the model), and print its scores")
    p.add_argument("--json", action="store_true", help="print the config as JSON instead of a table")
    return p


def _evaluator(text: str) -> dict:
    """The evaluator block from inline JSON, a JSON file, or a plan file; ValueError naming what is wrong."""
    from workbench.api.evaluator import EvaluatorError, parse_evaluator

    source = "--evaluator"
    stripped = text.strip()
    if not stripped.startswith("{"):
        path = Path(text).expanduser()
        source = str(path)
        try:
            stripped = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: cannot be read ({type(err).__name__})") from None
    try:
        block = json.loads(stripped)
    except ValueError as err:
        raise ValueError(f"{source}: not valid JSON ({err})") from None
    field = ""
    if isinstance(block, dict) and "evaluator" in block:  # a plan file
        block, field = block["evaluator"], "evaluator."
    try:
        parse_evaluator(block)
    except EvaluatorError as err:
        raise ValueError(f"{source}: field '{field}{err.field or 'evaluator'}': {err}") from None
    if block is None:
        raise ValueError(f"{source}: field '{field or 'evaluator'}': expected an evaluator block, got null")
    return block


def _check(args) -> str | None:
    from workbench.models.spec import ModelLoadError, classify_model_spec, device_dtype_flags_error

    try:
        classify_model_spec(args.model)
    except ModelLoadError as err:
        return f"--model: {err}"
    bad = device_dtype_flags_error(args.device, args.dtype)
    if bad:
        return bad
    if args.labels == "api" and not args.evaluator:
        return "--labels api needs --evaluator (the API model that marks the solutions)"
    if args.labels != "api" and (args.evaluator or args.max_cost is not None or args.no_cache):
        return "--evaluator, --max-cost and --no-cache apply to --labels api only"
    if args.max_cost is not None and not 0 < args.max_cost < float("inf"):  # inf: no limit at all
        return f"--max-cost: expected a positive number of US dollars, got {args.max_cost}"
    from workbench.datasets import load_documents

    if args.texts > len(load_documents("gsm8k")):
        return f"--texts {args.texts}: the bundled GSM8K holds {len(load_documents('gsm8k'))} problems"
    return None


def table(config: dict) -> str:
    """Held-out and validation scores of the classifier against the two baselines, and the sizes and times."""
    data = config["data"]
    lines = [(f"Point classifier for {config['model']['spec']} ({config['labels']['kind']} labels, hidden state "
              f"{config['layer']}): {config['folder']}"),
             "texts (tokens, points): " + ", ".join(f"{name} {data[name]['texts']} ({data[name]['tokens']:,}, {data[name]['points']:,})"
                                                  for name in ("train", "validation", "test"))
             + (f"; {len(data['skipped'])} skipped" if data["skipped"] else ""),
             (f"threshold {config['threshold']:.3f} (best F1 on validation); time: features "
              f"{config['seconds']['features'] / 60:.1f} min, fit {config['seconds']['fit'] / 60:.1f} min, total "
              f"{config['seconds']['total'] / 60:.1f} min"), "",
             "split       predictor          F1     precision  recall  accuracy", "-" * 64]
    for split in ("validation", "test"):
        m = config["metrics"][split]
        for who, name in (("classifier", "classifier"), ("never_a_point", "never (majority)"), ("always_a_point", "always")):
            s = m[who]
            lines.append(f"{split:<10}  {name:<16}  {s['f1']:.3f}  {s['precision']:>9.3f}  {s['recall']:>6.3f}  {s['accuracy']:>8.3f}")
    return "\n".join(lines)


def _check_folder(args) -> int:
    """``--check FOLDER``: 0 and its scores when the classifier is whole and made for --model's weights, else 2."""
    from workbench.models import load_model
    from workbench.models.spec import ModelLoadError
    from workbench.points.classifier import load
    from workbench.points.store import CheckpointError

    try:
        load(args.check)  # the files first: a damaged folder is said without loading a model
        lm = load_model(args.model, device=args.device, dtype=args.dtype)
        _, config = load(args.check, lm.model)
    except (CheckpointError, ModelLoadError) as err:
        print(f"workbench train-points: --check: {err}", file=sys.stderr)
        return 2
    config["folder"] = str(args.check)
    print(json.dumps(config, indent=1) if args.json else table(config))
    return 0


def main(argv: list[str]) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2
    if args.check:
        given = [flag for flag, value in (("--labels", args.labels != "rule"), ("--evaluator", args.evaluator),
                                          ("--restart", args.restart), ("--max-cost", args.max_cost is not None),
                                          ("--no-cache", args.no_cache)) if value]
        if given:  # they would be ignored: --check trains nothing
            print(f"workbench train-points: --check trains nothing; {', '.join(given)} would be ignored", file=sys.stderr)
            return 2
        return _check_folder(args)
    bad = _check(args)
    evaluator = None
    if not bad and args.evaluator:
        try:
            evaluator = _evaluator(args.evaluator)
        except ValueError as err:
            bad = str(err)
    if bad:
        print(f"workbench train-points: {bad}", file=sys.stderr)
        return 2
    from workbench.api.keys import MissingKey
    from workbench.datasets import DatasetError
    from workbench.models.spec import ModelLoadError
    from workbench.points.store import Cancelled, CheckpointError, TrainingBusy
    from workbench.points.train import FitSettings, TrainSettings, train

    settings = TrainSettings(model=args.model, labels=args.labels, texts=args.texts, layer=args.layer, seed=args.seed,
                             keep_calculator_spans=args.keep_calculator_spans, evaluator=evaluator,
                             max_cost_usd=args.max_cost, use_cache=not args.no_cache, device=args.device, dtype=args.dtype,
                             fit=FitSettings(hidden_dim=args.hidden_dim, epochs=args.epochs))
    last = [0.0]

    def progress(stage, done, total, message):
        now = time.monotonic()
        if stage in ("load", "done") or done in (0, total) or now - last[0] > 0.5:
            last[0] = now
            print(f"[{stage} {done}/{total}] {message}", file=sys.stderr, flush=True)

    try:
        config = train(settings, on_progress=progress, restart=args.restart)
    except (ModelLoadError, DatasetError, MissingKey) as err:
        print(f"workbench train-points: {err}", file=sys.stderr)
        return 2
    except ValueError as err:
        if "layer" in str(err) and "out of range" in str(err):
            print(f"workbench train-points: --layer: {err}", file=sys.stderr)
            return 2
        print(f"workbench train-points: failed: {str(err).splitlines()[0]}", file=sys.stderr)
        return 1
    except (TrainingBusy, Cancelled, CheckpointError) as err:
        print(f"workbench train-points: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("workbench train-points: interrupted; the texts done so far are kept, run it again to resume", file=sys.stderr)
        return 1
    except Exception as err:  # noqa: BLE001 — one line, not a traceback; the texts done stay for a rerun
        from workbench.secrets import scrub

        print(f"workbench train-points: failed: {scrub(f'{type(err).__name__}: {err}'.splitlines()[0])}", file=sys.stderr)
        return 1
    print(json.dumps(config, indent=1) if args.json else table(config))
    return 0
