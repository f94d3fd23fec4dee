"""What a session ran on: library versions and the device, recorded in every session.

Versions come from package metadata, so collecting them imports nothing heavy. Device facts are
read from torch only when torch is already loaded (a model was loaded).
"""

from __future__ import annotations

import platform
import sys
from importlib import metadata

from workbench import __version__, metrics

PACKAGES = ("torch", "transformers", "kvpress", "llmlingua", "textual", "accelerate", "gguf")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def collect(loaded_model=None) -> dict:
    """JSON-able facts; never environment variables (they may hold secrets)."""
    env = {
        "workbench": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "cpu_count": metrics.cpu_count(),
        "packages": {name: _version(name) for name in PACKAGES},
    }
    if "torch" in sys.modules:
        import torch

        env["cuda_available"] = torch.cuda.is_available()
        env["torch_cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            idx = torch.cuda.current_device()
            props = torch.cuda.get_device_properties(idx)
            env["device_name"] = props.name
            env["gpu_memory_bytes"] = int(props.total_memory)
        else:
            env["device_name"] = platform.processor() or platform.machine()
    if loaded_model is not None:
        env["model"] = loaded_model.describe()
    return env
