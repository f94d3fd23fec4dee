"""The API key: read from the environment at run time, held for scrubbing, never written anywhere."""

from __future__ import annotations

import os

from workbench import secrets
from workbench.api.evaluator import PROVIDERS
from workbench.models.spec import ModelLoadError


class MissingKey(ModelLoadError):
    """The evaluator's key variable is not set: nothing can be sent."""


def read_key(spec) -> str | None:
    """The key from the environment (never from a file); None when the provider needs none."""
    if spec.api_key_env is None:
        return None
    key = os.environ.get(spec.api_key_env, "").strip()
    if not key:
        if PROVIDERS[spec.provider].api_key_env is None:  # a self-hosted server: the variable is optional
            return None
        raise MissingKey(f"${spec.api_key_env} is not set: export {spec.api_key_env}=... (the {spec.provider} key) "
                         "before running; the workbench reads it at run time and never stores it")
    secrets.hold(spec.api_key_env, key)
    return key
