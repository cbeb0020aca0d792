"""Named, independent random streams derived from the config's seed.

``generator(seed, "train", task)`` always yields the same stream for the same names, independent
of the order in which streams are created and of any global RNG state.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *names: str) -> int:
    """A 63-bit seed from a base seed and a path of names (stable across runs and platforms)."""
    digest = hashlib.sha256(":".join([str(seed), *names]).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def generator(seed: int, *names: str) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded by :func:`derive_seed`."""
    return torch.Generator(device="cpu").manual_seed(derive_seed(seed, *names))
