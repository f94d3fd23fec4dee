"""The one scrubber: no secret (API key, token, password) from the environment reaches a file, a log or a message."""

from __future__ import annotations

import os
import re

_SECRET_NAME = re.compile(r"(TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.I)
_HF_TOKEN = re.compile(r"\bhf_[A-Za-z0-9]{20,}\b")
# Secrets read at run time from variables whose names do not look secret (an API key in $MY_LLM): name → value.
_held: dict[str, str] = {}


def hold(name: str, value: str) -> None:
    """Scrub ``value`` from every text from now on, whatever its variable is called."""
    if value and len(value) >= 4:
        _held[name] = value


def scrub(text: str) -> str:
    """Replace the value of any secret-looking environment variable (its name contains TOKEN, KEY, SECRET,
    PASSWORD or CREDENTIAL; values of 4 characters or more) and any Hugging Face token found in ``text``."""
    for name, value in os.environ.items():
        if value and len(value) >= 4 and _SECRET_NAME.search(name) and value in text:
            text = text.replace(value, f"<{name} hidden>")
    for name, value in _held.items():
        if value in text:
            text = text.replace(value, f"<{name} hidden>")
    return _HF_TOKEN.sub("<token hidden>", text)


def scrub_paragraph(text: str) -> str:
    """scrub, then one paragraph: library messages can span lines; a user-facing message does not."""
    return " ".join(scrub(text).split())
