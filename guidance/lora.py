"""Low-rank adapters (LoRA, Hu et al. 2021) on a UNet's attention projections, without peft: each
``to_q``, ``to_k``, ``to_v`` and ``to_out.0`` linear layer becomes ``base(x) + up(down(x))`` with the
base frozen and ``up`` zero-initialised, so a fresh adapter leaves the UNet's outputs unchanged."""

from __future__ import annotations

from typing import List, Sequence

import torch
from torch import Tensor, nn

from text3d.core.errors import ConfigError

TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
"""The attention projections that get an adapter (diffusers' names)."""


class LoRALinear(nn.Module):
    """``base(x) + up(down(x))``: a frozen linear layer and a trainable rank-``rank`` correction."""

    def __init__(self, base: nn.Linear, rank: int, generator: torch.Generator):
        super().__init__()
        self.base = base
        self.down = nn.Linear(base.in_features, rank, bias=False)
        self.up = nn.Linear(rank, base.out_features, bias=False)
        with torch.no_grad():
            self.down.weight.copy_(torch.randn(self.down.weight.shape, generator=generator) / rank)
            self.up.weight.zero_()
        self.down.to(base.weight), self.up.to(base.weight)

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) + self.up(self.down(x))


def add_lora(module: nn.Module, rank: int, generator: torch.Generator,
             targets: Sequence[str] = TARGETS) -> List[nn.Parameter]:
    """Wrap every target linear layer of ``module`` (in place) in a :class:`LoRALinear`; the rest of
    ``module`` is frozen. Returns the adapters' parameters (in a fixed order).

    Raises:
        ConfigError: ``module`` has no attention projection to adapt.
    """
    module.requires_grad_(False)
    names = [n for n, m in module.named_modules() if isinstance(m, nn.Linear) and n.endswith(tuple(targets))]
    if not names:
        raise ConfigError("guidance.type: vsd adapts the prior UNet's attention layers (to_q, to_k, to_v, to_out), "
                          "and this UNet has none; use a prior with attention (any Stable Diffusion, the shapes prior)")
    params: List[nn.Parameter] = []
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name)
        lora = LoRALinear(getattr(parent, child), rank, generator)
        setattr(parent, child, lora)
        params += [lora.down.weight, lora.up.weight]
    return params
