"""KVzapPress that uses a scorer trained by the workbench (imports kvpress: evaluation code only).

kvpress's KVzapPress loads ``nvidia/KVzap-{linear|mlp}-<model name>`` from the hub, which exists for a handful
of models only. This one takes, in order: the scorer named by its ``scorer`` parameter (a folder), the scorer
``workbench train-kvzap`` trained for the evaluated model (found by the model's fingerprint in the user data
directory), then the hub's. Whichever it uses must fit the model (layers, hidden size, KV heads); the press
says which it used in ``scorer_used``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kvpress import KVzapPress

from workbench import hub
from workbench.kvzap import scorer as kvzap_scorer
from workbench.kvzap import store


class NoScorer(LookupError):
    """No scorer for this model here: the message says the one command that trains one."""


@dataclass
class WorkbenchKVzapPress(KVzapPress):
    scorer: str | None = None  # a scorer folder; None: the one trained for the model, else the hub's
    scorer_used: str | None = field(default=None, init=False)

    def post_init_from_model(self, model):
        key = (id(model), self.scorer, self.model_type)
        if getattr(self, "_loaded_for", None) == key:
            return
        if self.scorer:
            folder = Path(self.scorer).expanduser()
            loaded = kvzap_scorer.load(folder)
            kvzap_scorer.check_fits(loaded, model, f"at {folder}")
            self.kvzap_model, self.scorer_used = loaded, kvzap_scorer.describe(folder)
        else:
            folder = store.find(kvzap_scorer.fingerprint(model), self.model_type)
            if folder is not None:
                loaded = kvzap_scorer.load(folder)
                kvzap_scorer.check_fits(loaded, model, f"at {folder}")
                self.kvzap_model, self.scorer_used = loaded, kvzap_scorer.describe(folder)
            else:
                self._from_hub(model)
        self._loaded_for = key

    def _from_hub(self, model) -> None:
        spec = kvzap_scorer.spec_hint(model)
        how = (f"train one with `{store.train_command(spec, self.model_type)}` (minutes on a CPU), or name a scorer folder "
               'with {"name": "kvzap", "params": {"scorer": PATH}}')
        if not hub.hub_reachable():
            raise NoScorer(f"no trained KVzap {self.model_type} scorer for {spec} in {store.store_root()} and the Hugging Face "
                           f"hub is not reachable: {how}")
        try:
            super().post_init_from_model(model)
        except Exception as err:  # most models have no nvidia/KVzap-* scorer on the hub
            raise NoScorer(f"no trained KVzap {self.model_type} scorer for {spec} here, and the hub has none "
                           f"({type(err).__name__}): {how}") from err
        kvzap_scorer.check_fits(self.kvzap_model, model, f"{self.kvzap_model_name} from the hub")
        self.scorer_used = f"KVzap {self.model_type} scorer {self.kvzap_model_name} (Hugging Face hub)"
