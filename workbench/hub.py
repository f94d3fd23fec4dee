"""Access to the Hugging Face hub: one offline check, one reachability probe, one way to say what failed.

Importing this module loads no heavy library. Everything that asks whether the hub can be used — model
loading, presses and compressors that need hub artefacts — asks here.
"""

from __future__ import annotations

import contextlib
import os
import threading

from workbench.secrets import scrub_paragraph

_HUB_PROBE_SECONDS = 3.0


def hf_offline() -> bool:
    """Whether the user turned the hub off (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE). Read at call time:
    huggingface_hub reads HF_HUB_OFFLINE once, at its import."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


_HUB_STATE: dict[str, bool] = {}


def hub_reachable() -> bool:
    """Whether the hub may be used: not turned off, and it answers (probed once per process, ~3 s at most)."""
    if hf_offline():
        return False
    if "reachable" not in _HUB_STATE:
        _HUB_STATE["reachable"] = _probe()
    return _HUB_STATE["reachable"]


@contextlib.contextmanager
def offline_unless_hub_reachable():
    """Within the block, an unreachable hub means local-cache-only: a press, compressor or dataset that needs the
    hub then fails in milliseconds (or loads from the cache) instead of ~70 s of retries. huggingface_hub and
    `datasets` read their offline flags once, at import, so the flags are set on the modules for the block."""
    if hub_reachable():
        yield
        return
    import huggingface_hub.constants as hub_constants

    flags = [(hub_constants, "HF_HUB_OFFLINE")]
    try:
        import datasets

        flags.append((datasets.config, "HF_DATASETS_OFFLINE"))
    except ImportError:  # the `hf:` datasets need the package; its absence is reported where they load
        pass
    previous = [getattr(module, name) for module, name in flags]
    for module, name in flags:
        setattr(module, name, True)
    try:
        yield
    finally:
        for (module, name), value in zip(flags, previous):
            setattr(module, name, value)


def _probe() -> bool:
    """One HEAD request with a short timeout. Without it an unreachable hub costs ~70 s of retries per
    file; DNS lookups ignore socket timeouts, so the request runs in a thread we stop waiting for."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    result: list[bool] = []  # appended to by the probe thread once the hub answered

    def probe() -> None:
        import urllib.error
        import urllib.request  # stdlib, and it honours HTTPS_PROXY like huggingface_hub does
        try:
            urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=_HUB_PROBE_SECONDS)
        except urllib.error.HTTPError:  # any HTTP answer, even 404, means the hub is reachable
            pass
        except Exception:  # noqa: BLE001 - every other failure means "not reachable"
            return
        result.append(True)

    thread = threading.Thread(target=probe, daemon=True, name="workbench-hub-probe")
    thread.start()
    thread.join(_HUB_PROBE_SECONDS + 1.0)
    return bool(result)


def hub_message(model_id: str, err: BaseException, offline: bool, hub_errors) -> str:
    chain, seen = [], err
    while seen is not None and len(chain) < 10:  # transformers wraps hub errors in OSError
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    fix = (f"To fix it: run once with network access (HF_HUB_OFFLINE unset), or download it with "
           f"`hf download {model_id}` (older huggingface_hub: `huggingface-cli download {model_id}`), or set HF_HOME "
           "to a folder whose cache has it, or pass a local model folder or .gguf file instead.")
    if not offline and any(isinstance(e, hub_errors.RepositoryNotFoundError) for e in chain):  # gated too
        return (f"The model '{model_id}' was not found on the Hugging Face hub or is gated or private: check the "
                "spelling; for a gated model accept its licence on its hub page and set the HF_TOKEN environment "
                f"variable to a token with access. {fix}")
    if offline and isinstance(err, OSError):  # missing files; a ValueError means found but unloadable
        why = ("HF_HUB_OFFLINE is set" if hf_offline() else "the hub could not be reached")
        return (f"The model '{model_id}' is not in the local Hugging Face cache and {why}. {fix} "
                "For a gated model also set HF_TOKEN.")
    return (f"The model '{model_id}' could not be loaded ({type(err).__name__}: {first_line(err)}). {fix}")



def first_line(err: BaseException) -> str:
    return scrub_paragraph((str(err).strip().splitlines() or [""])[0][:300])
