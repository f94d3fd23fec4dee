"""Train a point classifier for a model: labels on GSM8K reference reasoning, the frozen model's hidden states,
an MLP fitted with BCE on balanced samples, a threshold chosen on validation problems, F1 on held-out problems
(torch; the CLI and the app call ``train``).

What survives a kill: each text's features (its solution tokens' hidden states at the layer) and labels are
written to the work folder as soon as they are computed (one safetensors file per text, renamed into place), so a
rerun skips the texts already done; API answers are in the response cache as well. Settings or model weights that
differ from the work folder's start it afresh (``restart`` forces that). The fit itself takes seconds to a minute
and simply runs again. The finished classifier is written beside its folder and renamed into place.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from threading import Event

import torch
from safetensors.torch import load_file, save_file

from workbench.points import classifier as point_classifier
from workbench.points import labels as point_labels
from workbench.points import scores, store
from workbench.points.features import answer_hidden, encode, resolve_layer
from workbench.points.store import Cancelled, TrainingBusy

Progress = Callable[[str, int, int, str], None]  # (stage, done, total, message)


@dataclass(frozen=True)
class FitSettings:
    hidden_dim: int = 256
    dropout: float = 0.1
    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 0.01


@dataclass(frozen=True)
class TrainSettings:
    """``texts``: GSM8K problems in all, cut 80/10/10 into training, validation (threshold) and held-out ones.
    ``layer``: index into the model's ``hidden_states`` (−1: the last layer). ``evaluator``: the API block
    (labels ``api``), as a plan's ``evaluator``."""

    model: str = "smollm2-135m"
    labels: str = "rule"
    texts: int = 200
    layer: int = -1
    seed: int = 0
    keep_calculator_spans: bool = False
    evaluator: dict | None = None
    max_cost_usd: float | None = None
    use_cache: bool = True
    batch_texts: int = 8
    fit: FitSettings = field(default_factory=FitSettings)
    device: str = "auto"
    dtype: str = "auto"

    def identity(self, layer: int) -> dict:
        """What the features and labels depend on (not the fit, nor where it runs)."""
        evaluator = None
        if self.labels == "api" and self.evaluator:
            evaluator = {k: self.evaluator.get(k) for k in ("provider", "model", "base_url", "temperature", "seed", "endpoint")}
        return {"model": self.model, "labels": self.labels, "texts": self.texts, "layer": layer, "seed": self.seed,
                "keep_calculator_spans": self.keep_calculator_spans, "evaluator": evaluator}


def train(settings: TrainSettings, on_progress: Progress | None = None, cancel: Event | None = None,
          restart: bool = False, api_transport=None, loaded=None) -> dict:
    """Train and save a classifier; returns its config (also ``config.json`` beside the weights) plus ``folder``.
    ``loaded``: the model already loaded for ``settings.model`` (a LoadedModel), else it is loaded here."""
    from workbench.kvzap.scorer import fingerprint, model_shape
    from workbench.models import load_model

    say = on_progress or (lambda *a: None)
    started = time.perf_counter()
    say("load", 0, 1, f"loading {settings.model}")
    lm = loaded or load_model(settings.model, device=settings.device, dtype=settings.dtype)
    model, tokenizer = lm.model, lm.tokenizer
    shape, fp = model_shape(model), fingerprint(model)
    layer = resolve_layer(model, settings.layer)
    problems = point_labels.problems(settings.texts, settings.seed, settings.keep_calculator_spans)
    work = store.work_dir(settings.model, settings.labels, layer)
    skipped: dict[int, str] = {}
    with _exclusive(work):
        key = {"settings": settings.identity(layer), "fingerprint": fp, "format": store.FORMAT}
        if restart or store.read_json(work / "work.json") != key:
            shutil.rmtree(work / "texts", ignore_errors=True)
            store.write_json_atomically(work / "work.json", key)
        (work / "texts").mkdir(parents=True, exist_ok=True)
        shard = lambda p: work / "texts" / f"{p.index:04d}.safetensors"
        todo = [p for p in problems if not shard(p).is_file()]
        if len(todo) < len(problems):
            say("features", len(problems) - len(todo), len(problems),
                f"resuming: {len(problems) - len(todo)} of {len(problems)} texts were done by an earlier run and are kept")
        marked: dict[int, str] = {}
        if settings.labels == "api" and todo:
            marked, failed = _api_marks(settings, todo, tokenizer, say, cancel, api_transport)
            skipped.update(failed)
            todo = [p for p in todo if p.index in marked]
        t0 = time.perf_counter()
        for begin in range(0, len(todo), settings.batch_texts):
            if cancel is not None and cancel.is_set():
                raise Cancelled("training cancelled; the texts done so far are kept and a rerun resumes from them")
            batch = todo[begin : begin + settings.batch_texts]
            pairs = [encode(tokenizer, p.prompt, p.answer) for p in batch]
            states = answer_hidden(model, pairs, layer)
            for p, (_, ids), hidden in zip(batch, pairs, states):
                try:
                    labels = _labels(settings.labels, tokenizer, ids, p, marked.get(p.index))
                except point_labels.AlignmentError as err:
                    skipped[p.index] = str(err)
                    continue
                tmp = shard(p).with_suffix(".tmp")
                save_file({"hidden": hidden, "labels": torch.tensor(labels, dtype=torch.int8)}, str(tmp))
                os.replace(tmp, shard(p))
            done = len(problems) - len(todo) + begin + len(batch)
            say("features", done, len(problems), f"hidden states at layer {layer}: text {done}/{len(problems)}")
        features_seconds = time.perf_counter() - t0
        parts = {p.index: load_file(str(shard(p))) for p in problems if shard(p).is_file()}
        if len(parts) < len(problems) - len(skipped):
            raise RuntimeError(f"{len(problems) - len(skipped) - len(parts)} texts have no features in {work}")
        split = {name: _stack(parts, [p for p in problems if p.part == name]) for name in ("train", "validation", "test")}
        if not split["train"][1].any():
            raise ValueError("the training texts hold no compression point: nothing to learn")
        t1 = time.perf_counter()
        mlp, losses = _fit(split["train"], shape.hidden_size, settings.fit, settings.seed, say, cancel)
        fit_seconds = time.perf_counter() - t1
        probs = {name: mlp.probabilities(x).numpy() for name, (x, _) in split.items()}
        threshold = scores.best_threshold(split["validation"][1].numpy(), probs["validation"])
        metrics = {name: scores.report(split[name][1].numpy(), probs[name], threshold) for name in ("validation", "test")}
        config = _config(settings, shape, fp, layer, threshold, metrics, problems, parts, skipped, losses,
                         {"features": features_seconds, "fit": fit_seconds, "total": time.perf_counter() - started})
        folder = point_classifier.save(mlp, config, store.classifier_dir(settings.model, settings.labels, layer))
    shutil.rmtree(work, ignore_errors=True)
    config["folder"] = str(folder)
    say("done", 1, 1, f"saved {folder}")
    return config


def _labels(kind: str, tokenizer, ids: list[int], problem, marked: str | None) -> list[int]:
    if kind == "rule":
        return point_labels.rule_labels(point_labels.token_texts(tokenizer, ids))
    # Aligned to the answer as the tokenizer gives it back (its leading space and any normalisation included).
    offsets = point_labels.marker_offsets(tokenizer.decode(ids), marked)
    return point_labels.labels_from_offsets(point_labels.token_ends(tokenizer, ids), offsets)


def _api_marks(settings, problems, tokenizer, say, cancel, transport) -> tuple[dict[int, str], dict[int, str]]:
    """The API model's marked copies of the solutions (response cache first), and why any text got none."""
    from workbench.api.cache import ResponseCache
    from workbench.api.client import ApiClient, Request
    from workbench.api.evaluator import parse_evaluator
    from workbench.api.keys import read_key
    from workbench.api.prices import price_for

    spec = parse_evaluator(settings.evaluator)
    count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])
    client = ApiClient(spec, read_key(spec), price_for(spec), ResponseCache() if settings.use_cache else None,
                       settings.max_cost_usd, transport=transport)
    if cancel is not None:
        client.cancel = cancel
    last = [0.0]

    def activity(stats):
        now = time.monotonic()
        if now - last[0] > 0.5:
            last[0] = now
            say("api", stats["done"] + stats["failed"], len(problems), f"{spec.label()}: {stats['done']} answered "
                f"({stats['cached']} from the cache), {stats['in_flight']} in flight, ${stats['spent_usd']:.4f} spent")

    client.on_activity = activity
    try:
        say("api", 0, len(problems), f"asking {spec.label()} to mark {len(problems)} solutions")
        outcomes = client.answer_many([Request(prompt, max_new, n_in) for prompt, max_new, n_in in
                                       point_labels.api_requests(problems, count)])
    finally:
        client.close()
    if client.stop_reason:
        raise RuntimeError(f"the API labelling stopped: {client.stop_reason}")
    if cancel is not None and cancel.is_set():
        raise Cancelled("training cancelled; API answers are in the response cache and a rerun reuses them")
    marked, failed = {}, {}
    for p, outcome in zip(problems, outcomes):
        if outcome is None or not hasattr(outcome, "text"):
            failed[p.index] = getattr(outcome, "message", "not sent")
        elif point_labels.MARKER not in outcome.text:
            failed[p.index] = "the answer holds no <COMP> marker"
        else:
            marked[p.index] = outcome.text
    say("api", len(problems), len(problems), f"{len(marked)} of {len(problems)} solutions marked")
    if not marked:
        raise RuntimeError("the API model marked no solution: " + "; ".join(sorted(set(failed.values())))[:300])
    return marked, failed


def _stack(parts: dict, problems: list) -> tuple[torch.Tensor, torch.Tensor]:
    have = [parts[p.index] for p in problems if p.index in parts]
    if not have:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.int8)
    return torch.cat([h["hidden"] for h in have]), torch.cat([h["labels"] for h in have])


def _fit(train_split, hidden_size: int, fit: FitSettings, seed: int, say, cancel) -> tuple:
    """BCE on balanced samples (seed 003): each epoch sees every point and as many non-points drawn afresh."""
    x, y = train_split
    torch.manual_seed(seed)
    mlp = point_classifier.PointMLP(hidden_size, fit.hidden_dim, fit.dropout)
    mlp.mean.copy_(x.mean(0))
    mlp.std.copy_(x.std(0).clamp_min(1e-4))
    optimizer = torch.optim.AdamW(mlp.parameters(), lr=fit.lr, weight_decay=fit.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    positives, negatives = torch.nonzero(y == 1).flatten(), torch.nonzero(y == 0).flatten()
    loss_fn = torch.nn.BCEWithLogitsLoss()
    losses = []
    for epoch in range(fit.epochs):
        mlp.train()
        drawn = negatives[torch.randperm(len(negatives), generator=generator)[: len(positives)]]
        rows = torch.cat([positives, drawn])
        rows = rows[torch.randperm(len(rows), generator=generator)]
        total, batches = 0.0, 0
        for begin in range(0, len(rows), fit.batch_size):
            batch = rows[begin : begin + fit.batch_size]
            loss = loss_fn(mlp(x[batch]), y[batch].float())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, batches = total + loss.item(), batches + 1
        losses.append(total / max(batches, 1))
        say("fit", epoch + 1, fit.epochs, f"fitting the classifier: epoch {epoch + 1}/{fit.epochs}, loss {losses[-1]:.4f}")
        if cancel is not None and cancel.is_set():
            raise Cancelled("training cancelled; the texts done so far are kept and a rerun resumes from them")
    return mlp.eval(), losses


def _config(settings, shape, fp, layer, threshold, metrics, problems, parts, skipped, losses, seconds) -> dict:
    from workbench import __version__

    def part(name):
        used = [p for p in problems if p.part == name and p.index in parts]
        return {"problems": [p.index for p in used], "texts": len(used),
                "tokens": int(sum(len(parts[p.index]["labels"]) for p in used)),
                "points": int(sum(int(parts[p.index]["labels"].sum()) for p in used))}

    evaluator = None
    if settings.labels == "api":
        evaluator = {k: settings.evaluator.get(k) for k in ("provider", "model", "base_url") if settings.evaluator.get(k)}
    return {
        "format": store.FORMAT, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": {"spec": settings.model, "fingerprint": fp, "n_layers": shape.n_layers, "hidden_size": shape.hidden_size},
        "layer": layer, "threshold": threshold, "hidden_dim": settings.fit.hidden_dim,
        "labels": {"kind": settings.labels, "evaluator": evaluator,
                   "rule": "step boundaries (newline, '.' before whitespace, closed <<…>> span)" if settings.labels == "rule"
                   else None},
        "data": {"dataset": "gsm8k", "seed": settings.seed, "keep_calculator_spans": settings.keep_calculator_spans,
                 "layout": "Question: {question}\\nAnswer: {solution}", "skipped": {str(k): v for k, v in skipped.items()},
                 **{name: part(name) for name in ("train", "validation", "test")}},
        "fit": asdict(settings.fit) | {"sampling": "balanced: every point and as many non-points, drawn each epoch",
                                       "loss": "BCE with logits"},
        "train_loss": [round(v, 5) for v in losses],
        "metrics": _rounded(metrics), "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "workbench_version": __version__,
    }


def _rounded(value):
    if isinstance(value, float):
        return round(value, 5)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


class _exclusive:
    """One training per work folder at a time (flock; the lock goes with its process, so a kill frees it)."""

    def __init__(self, work):
        self.path = work.parent / f".{work.name}.lock"

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(self.path, "a+")
        try:
            import fcntl
        except ImportError:  # no lock on Windows, as for sessions
            return self
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.fh.close()
            raise TrainingBusy(f"another process is training this classifier (lock {self.path})") from None
        return self

    def __exit__(self, *exc):
        self.fh.close()
