"""The compression workbench: prompt compressors and KV-cache presses measured in one harness.

Importing this package (or any engine module) must not import torch, transformers, textual or
rich: heavy libraries are imported inside the functions that need them.
"""

__version__ = "0.1.0"
