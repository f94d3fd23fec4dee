"""Can this model be loaded here? A check without loading it: the Setup screen runs it in a worker thread as
the user types, so an unknown hub id is flagged before a run starts instead of 13 s after.

It calls the loader's own checks (workbench/models: the shape of the spec, the embedded model's package;
workbench/hub: whether the hub is offline or reachable) and adds one look at the Hugging Face cache, and, with
the hub reachable and the id not cached, one question to the hub. Imports neither torch nor transformers;
``huggingface_hub`` only for a hub id.
"""

from __future__ import annotations

from dataclasses import dataclass

from workbench import hub, models

KIND_TEXT = {"embedded": "embedded model, works offline", "gguf": "GGUF file (de-quantised once, then cached)",
             "folder": "local Hugging Face folder"}
HUB_SECONDS = 5.0


@dataclass(frozen=True)
class ModelCheck:
    ok: bool  # False: loading it here would fail, ``message`` says why and how to fix it
    kind: str | None  # embedded | gguf | folder | hub, None when the spec is not a model spec at all
    message: str


def check_model(spec: str) -> ModelCheck:
    """Whether ``spec`` (embedded name | .gguf | folder | hub id) can be loaded on this machine now. Takes up to
    ~4 s for a hub id that is not cached (the reachability probe), milliseconds otherwise."""
    try:
        kind = models.classify_model_spec(spec)
    except models.ModelLoadError as err:
        return ModelCheck(False, None, str(err))
    if kind == "embedded":
        try:
            models.embedded_gguf(spec.strip().lower())  # the package and its file, without importing it
        except models.ModelLoadError as err:
            return ModelCheck(False, kind, str(err))
    if kind != "hub":
        return ModelCheck(True, kind, KIND_TEXT[kind])
    return _check_hub(spec.strip())


def _check_hub(model_id: str) -> ModelCheck:
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = isinstance(try_to_load_from_cache(model_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - a malformed id or an unreadable cache: not cached
        cached = False
    if cached:
        return ModelCheck(True, "hub", "Hugging Face hub id, in the local cache (works offline)")
    fix = (f"download it once with `hf download {model_id}` where the hub is reachable, set HF_HOME to a cache that "
           "has it, or pass a local folder or .gguf file")
    if hub.hf_offline():
        return ModelCheck(False, "hub", f"'{model_id}' is not in the local Hugging Face cache and HF_HUB_OFFLINE is set: {fix}.")
    if not hub.hub_reachable():
        return ModelCheck(False, "hub", f"'{model_id}' is not in the local Hugging Face cache and the hub cannot be reached "
                                        f"from here: {fix}.")
    return _ask_hub(model_id)


def _ask_hub(model_id: str) -> ModelCheck:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        HfApi().model_info(model_id, timeout=HUB_SECONDS)
    except GatedRepoError:
        return ModelCheck(False, "hub", f"'{model_id}' is gated: accept its licence on its hub page and set HF_TOKEN to a "
                                        "token with access.")
    except RepositoryNotFoundError:
        return ModelCheck(False, "hub", f"'{model_id}' was not found on the Hugging Face hub: check the spelling (a private "
                                        "model needs HF_TOKEN).")
    except Exception as err:  # noqa: BLE001 - the hub answered oddly: the download itself will say more
        return ModelCheck(True, "hub", f"Hugging Face hub id, downloaded on the first run (the hub did not confirm it: "
                                       f"{type(err).__name__})")
    return ModelCheck(True, "hub", "Hugging Face hub id, downloaded on the first run (cached after)")
