"""Random eviction whose draw does not depend on the device.

kvpress's ``RandomPress`` draws its scores with the generator of the device the keys live on, so the
same plan evicts different entries on a CPU and on a GPU (quickstart's random eviction gave PPL 45.4
on a CPU and 46.2 on an H100). This press draws from torch's CPU generator — seeded per sample by the
engine, or from the press's own ``seed`` — and moves the scores to the keys' device: one plan, the same
evictions and the same numbers on every machine. Imports torch and kvpress (built by ``press_build.build_press``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from kvpress import RandomPress


@dataclass
class DeviceIndependentRandomPress(RandomPress):
    def score(self, module, hidden_states, keys, values, attentions, kwargs) -> torch.Tensor:
        generator = None
        if self.seed is not None:
            generator = torch.Generator(device="cpu")
            generator.manual_seed(self.seed)
        # float32 on the CPU whatever the keys' dtype: bfloat16 scores would tie, and ties break by device.
        return torch.rand(*keys.shape[:-1], generator=generator, dtype=torch.float32).to(keys.device)
