"""The int8 variant's options, the one place their defaults live."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class QuantOptions:
    """The int8 variant's options (``variants: {int8: {...}}``, ``swapped:``, ``finetuned:``).
    A config states every one (:meth:`from_options`). The defaults: 7-bit weights and 8-bit
    activations, as every config has them (8-bit weights with 8-bit activations saturate the int8
    kernels on CPUs without VNNI: :func:`iclbench.kernels.int8.check_kernel_exact`), the paper
    config's EMA decay (shorter runs set a smaller one) and quantization from the first step."""

    weight_bits: int = 7
    activation_bits: int = 8
    ema_decay: float = 0.9999
    start_step: int = 0

    def __post_init__(self) -> None:
        for key in ("weight_bits", "activation_bits"):
            bits = getattr(self, key)
            if not isinstance(bits, int) or not 2 <= bits <= 8:
                raise ValueError(f"{key} must be an integer in 2..8 (stored as int8), got {bits!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")
        if not isinstance(self.start_step, int) or self.start_step < 0:
            raise ValueError(f"start_step must be a non-negative integer, got {self.start_step!r}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> QuantOptions:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown option(s) {unknown}; known are: {', '.join(sorted(known))}")
        missing = sorted(known - set(options))
        if missing:
            raise ValueError(f"missing option(s) {missing}; every option must be stated")
        return cls(**dict(options))
