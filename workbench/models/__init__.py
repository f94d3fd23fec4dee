"""Resolve a model spec ("embedded default | .gguf file | local folder | hub id") to a loaded model.

``spec``: what a spec names (no load); ``gguf_cache``: GGUF de-quantisation and its cache; ``loader``: loading
(transformers, imported when a model loads). Importing this package loads neither torch nor transformers.
"""

from workbench.models.loader import LoadedModel, load_model, quiet_transformers
from workbench.models.spec import (ATTN_IMPLEMENTATIONS, DTYPES, EMBEDDED_MODELS, EmbeddedModel, ModelLoadError, cache_root,
                                   classify_model_spec, data_root, embedded_gguf, resolve_device_dtype)

__all__ = ["ATTN_IMPLEMENTATIONS", "DTYPES", "EMBEDDED_MODELS", "EmbeddedModel", "LoadedModel", "ModelLoadError", "cache_root",
           "classify_model_spec", "data_root", "embedded_gguf", "load_model", "quiet_transformers", "resolve_device_dtype"]
