"""Train a KVzap scorer for a model: KVzip+ targets on bundled texts, a per-layer fit, a held-out check, saved
where the KVzap press finds it (torch; the CLI and the app call ``train``).

Steps and what survives a kill: (1) each text's targets are written to the work folder as soon as they are
computed (one file per text, renamed into place), so a restarted training skips the texts already scored;
settings or model weights that differ from the work folder's start it afresh. (2) The fit and the held-out
evaluation take a minute or two and simply run again. (3) The finished scorer is written beside its final
folder and renamed into place, so a kill leaves the previous scorer or the new one, never half of one.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from threading import Event

import torch
from safetensors.torch import load_file, save_file

from workbench import datasets
from workbench.atomic_write import publish_folder, staging_folder
from workbench.kvzap import fit as kvzap_fit
from workbench.kvzap import scorer as kvzap_scorer
from workbench.kvzap import store
from workbench.kvzap.store import DEFAULT_DATA, Cancelled, TrainingBusy
from workbench.kvzap.targets import text_targets


@dataclass(frozen=True)
class TrainSettings:
    """What to train on. Text lengths in tokens of the model's tokenizer; ``texts``/``held_out`` in all datasets
    together (shared out in turn); ``tokens_per_text`` drawn at random from each text, as kvpress does."""

    model: str = "smollm2-135m"
    data: tuple[str, ...] = DEFAULT_DATA
    texts: int = 16
    held_out: int = 4
    min_tokens: int = 750
    max_tokens: int = 1250
    tokens_per_text: int = 500
    seed: int = 0
    fit: kvzap_fit.FitSettings = field(default_factory=kvzap_fit.FitSettings)
    device: str = "auto"
    dtype: str = "auto"

    @property
    def kind(self) -> str:
        return self.fit.kind

    def identity(self) -> dict:
        """What the collected targets depend on (not the fit settings, nor where it runs)."""
        d = asdict(self)
        return {k: d[k] for k in ("model", "data", "texts", "held_out", "min_tokens", "max_tokens", "tokens_per_text", "seed")} | {
            "data": list(self.data)}


Progress = Callable[[str, int, int, str], None]  # (stage, done, total, message)


@dataclass
class _Text:
    index: int
    dataset: str
    ids: list[int]
    held_out: bool


def training_texts(tokenizer, settings: TrainSettings) -> list[_Text]:
    """Token windows of the bundled datasets, each cut to a length drawn in [min_tokens, max_tokens]; per dataset,
    its first windows are held out. Deterministic in the settings."""
    n_sets = len(settings.data)
    out: list[_Text] = []
    for d, name in enumerate(settings.data):
        n_train = settings.texts // n_sets + (d < settings.texts % n_sets)
        n_test = settings.held_out // n_sets + (d < settings.held_out % n_sets)
        if n_train + n_test == 0:
            continue
        available = datasets.window_count(name, tokenizer, settings.max_tokens - 2, 1)
        if n_train + n_test > available:  # said in the command's own flags (lm_samples would speak of windows)
            raise datasets.DatasetError(
                f"--texts {settings.texts} / --held-out {settings.held_out}: {name} is asked for {n_train + n_test} texts "
                f"of up to --max-tokens {settings.max_tokens} tokens and holds {available}; ask for fewer texts, a "
                "smaller --max-tokens, or more --data")
        windows = datasets.lm_samples(name, tokenizer, n_train + n_test, settings.max_tokens - 2, 1, settings.seed)
        lengths = random.Random(f"{settings.seed}:{name}")
        for j, w in enumerate(windows):
            n = lengths.randint(settings.min_tokens, settings.max_tokens)
            out.append(_Text(len(out), name, list(w.input_ids[:n]), held_out=j < n_test))
    return out


def train(settings: TrainSettings, on_progress: Progress | None = None, cancel: Event | None = None,
          restart: bool = False) -> dict:
    """Train and save a scorer; returns its record (also written as record.json beside it)."""
    from workbench.models import load_model

    say = on_progress or (lambda *a: None)
    started = time.perf_counter()
    say("load", 0, 1, f"loading {settings.model}")
    lm = load_model(settings.model, device=settings.device, dtype=settings.dtype)
    model, tokenizer = lm.model, lm.tokenizer
    shape, fingerprint = kvzap_scorer.model_shape(model), kvzap_scorer.fingerprint(model)
    texts = training_texts(tokenizer, settings)
    if not any(not t.held_out for t in texts):
        raise ValueError("no training texts: ask for at least one")
    work = store.work_dir(settings.model, settings.kind)
    with _exclusive(work):
        key = {"settings": settings.identity(), "fingerprint": fingerprint, "format": 1}
        if restart or store.read_json(work / "work.json") != key:
            shutil.rmtree(work / "texts", ignore_errors=True)
            store.write_json_atomically(work / "work.json", key)
        (work / "texts").mkdir(parents=True, exist_ok=True)
        earlier = sum(1 for t in texts if (work / "texts" / f"{t.index:04d}.safetensors").is_file())
        if earlier:
            say("targets", 0, len(texts), f"resuming: {earlier} of {len(texts)} texts were scored by an earlier run and are kept")
        t0 = time.perf_counter()
        reused = 0
        for text in texts:
            if cancel is not None and cancel.is_set():
                raise Cancelled("training cancelled; the texts scored so far are kept and a rerun resumes from them")
            shard = work / "texts" / f"{text.index:04d}.safetensors"
            kept = shard.is_file()
            if kept:
                reused += 1
            else:
                gen = torch.Generator().manual_seed(settings.seed * 100_003 + text.index)
                t = text_targets(model, tokenizer, text.ids, settings.tokens_per_text, gen)
                tmp = shard.with_suffix(".tmp")
                save_file({"hidden": t.hidden.contiguous(), "scores": t.scores.contiguous()}, str(tmp))
                os.replace(tmp, shard)
            say("targets", text.index + 1, len(texts), f"KVzip+ targets: text {text.index + 1}/{len(texts)} ({text.dataset}, "
                f"{len(text.ids)} tokens{', kept from an earlier run' if kept else ''})")
        targets_seconds = time.perf_counter() - t0
        device = lm.device
        del model, lm
        parts = {t.index: load_file(str(work / "texts" / f"{t.index:04d}.safetensors")) for t in texts}
        x_train, y_train = _stack(parts, [t for t in texts if not t.held_out])
        x_test, y_test = _stack(parts, [t for t in texts if t.held_out])
        t1 = time.perf_counter()
        losses: list[float] = []

        def epoch_done(epoch, epochs, loss):
            losses.append(loss)
            say("fit", epoch, epochs, f"fitting the {settings.kind} scorer: epoch {epoch}/{epochs}, loss {loss:.3f}")
            if cancel is not None and cancel.is_set():
                raise Cancelled("training cancelled; the texts scored so far are kept and a rerun resumes from them")

        scorer = kvzap_fit.fit(x_train, y_train, settings.fit, on_epoch=epoch_done, device=device)
        fit_seconds = time.perf_counter() - t1
        per_layer = kvzap_fit.layer_fit(kvzap_fit.predict(scorer, x_test), y_test) if len(x_test) else []
        record = _record(settings, shape, fingerprint, texts, x_train, x_test, losses, per_layer,
                         {"targets": targets_seconds, "fit": fit_seconds, "total": time.perf_counter() - started},
                         reused)
        folder = _save(scorer, record, settings)
        shutil.rmtree(work / "texts", ignore_errors=True)
        (work / "work.json").unlink(missing_ok=True)
    shutil.rmtree(work, ignore_errors=True)
    record["folder"] = str(folder)
    say("done", 1, 1, f"saved {folder}")
    return record


def _stack(parts: dict, texts: list[_Text]) -> tuple[torch.Tensor, torch.Tensor]:
    if not texts:
        return torch.empty(0), torch.empty(0)
    return (torch.cat([parts[t.index]["hidden"] for t in texts]), torch.cat([parts[t.index]["scores"] for t in texts]))


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v == v]  # NaN: a layer whose targets do not vary
    return sum(values) / len(values) if values else None


def _record(settings, shape, fingerprint, texts, x_train, x_test, losses, per_layer, seconds, reused) -> dict:
    import kvpress

    from workbench import __version__

    data = [{"dataset": name, "texts_train": sum(1 for t in texts if t.dataset == name and not t.held_out),
             "texts_held_out": sum(1 for t in texts if t.dataset == name and t.held_out)} for name in settings.data]
    return {
        "format": 1, "kind": settings.kind, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": {"spec": settings.model, "fingerprint": fingerprint, "n_layers": shape.n_layers,
                  "hidden_size": shape.hidden_size, "n_kv_heads": shape.n_kv_heads},
        "data": data, "text_tokens": [settings.min_tokens, settings.max_tokens], "tokens_per_text": settings.tokens_per_text,
        "target": "log KVzip+ score (kvpress KVzipPress, kvzip_plus_normalization=True)",
        "samples_train": int(len(x_train)), "samples_held_out": int(len(x_test)),
        "fit": asdict(settings.fit), "epochs": len(losses), "train_loss": [round(v, 5) for v in losses],
        "held_out": {"mean_r2": _mean([p["r2"] for p in per_layer]), "mean_pearson_r": _mean([p["pearson_r"] for p in per_layer]),
                     "per_layer": [{k: (round(v, 5) if isinstance(v, float) and v == v else (None if isinstance(v, float) else v))
                                    for k, v in p.items()} for p in per_layer]},
        "seconds": {k: round(v, 2) for k, v in seconds.items()}, "texts_reused": reused,
        "workbench_version": __version__, "kvpress_version": kvpress.__version__ if hasattr(kvpress, "__version__") else None,
    }


def _save(scorer, record: dict, settings: TrainSettings) -> Path:
    """save_pretrained into a fresh folder beside the final one, then swap it in."""
    final = store.scorer_dir(settings.model, settings.kind)
    fresh = staging_folder(final)
    scorer.save_pretrained(str(fresh))
    store.write_json_atomically(fresh / store.RECORD, record)
    return publish_folder(fresh, final)


class _exclusive:
    """One training per work folder at a time (flock; the lock goes with its process, so a kill frees it)."""

    def __init__(self, work: Path):
        self.path = work.parent / f".{work.name}.lock"

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(self.path, "a+")
        try:
            import fcntl  # not on Windows: no lock there, as for sessions
        except ImportError:
            return self
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.fh.close()
            raise TrainingBusy(f"another process is training this scorer (lock {self.path})") from None
        return self

    def __exit__(self, *exc):
        self.fh.close()  # closing the file releases the lock
