"""The ``learned-points`` schedule: compress where the point classifier's probability passes its threshold.

Built by the decoding family with the method's resolved parameters as keyword arguments plus ``model`` and
``tokenizer``. It loads the classifier named by ``classifier`` (a folder) or the newest one trained for the loaded
model's weights (found by fingerprint, as the KVzap press finds its scorer), checks that it fits the model, and
reads the hidden state the classifier was trained on (``hidden_layer``). ``threshold`` overrides the one chosen
on validation problems at training. No classifier here: :class:`store.NoClassifier` (the cell is unavailable, its
reason the command that trains one); a damaged or foreign one: :class:`store.CheckpointError` (the cell fails with
the reason).
"""

from __future__ import annotations

import math

from workbench.decoding.schedule import Schedule, Step
from workbench.points import classifier as point_classifier


class LearnedPoints(Schedule):
    def __init__(self, *, model, tokenizer=None, classifier: str | None = None, threshold: float | None = None,
                 **params):
        self.mlp, self.config, self.folder = point_classifier.for_model(model, classifier)
        if threshold is not None and not (isinstance(threshold, (int, float)) and 0 < threshold < 1 and math.isfinite(threshold)):
            raise ValueError(f"threshold: expected a probability between 0 and 1 (exclusive), got {threshold!r}")
        self.threshold = float(threshold) if threshold is not None else float(self.config["threshold"])
        self.hidden_layer = int(self.config["layer"])
        self.params = params  # press, budget, rate…: the decoding loop's business, recorded in describe()
        self.last_probability: float | None = None
        self._device = None

    def is_point(self, step: Step) -> bool:
        if step.hidden is None:
            raise ValueError("the learned-points schedule needs the hidden state of each token (Step.hidden)")
        if self._device != step.hidden.device:
            self.mlp = self.mlp.to(step.hidden.device)
            self._device = step.hidden.device
        self.last_probability = float(self.mlp.probabilities(step.hidden.reshape(1, -1))[0])
        return self.last_probability >= self.threshold

    def describe(self) -> dict:
        test = (self.config.get("metrics") or {}).get("test") or {}
        return {"classifier": str(self.folder), "layer": self.hidden_layer, "threshold": self.threshold,
                "labels": (self.config.get("labels") or {}).get("kind"), "trained_at": self.config.get("created_at"),
                "held_out_f1": (test.get("classifier") or {}).get("f1")}
