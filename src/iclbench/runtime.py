"""Process-level settings of a job: glibc malloc kept from returning memory to the OS.

PyTorch's CPU allocator takes every tensor from ``malloc``. glibc serves blocks above its mmap
threshold (128 KiB at start, raised on the fly up to 32 MiB) with a fresh ``mmap`` and returns
freed memory at the top of the heap to the OS above a trim threshold, so a forward that allocates
and frees the same large tensors on every call touches new pages on every call: a minor page
fault per 4 KiB page. On a virtual machine a fault costs microseconds. Measured here (2-core VM,
whole default model, batch 1, 8192 tokens): the learned-landmark Nystrom model took ~7,400 faults
per forward and 90 ms, and 52 ms with none; softmax (one fused kernel per layer) ~11,000 faults
and no measurable change. The faults therefore penalise variants built from many ops (Nystrom,
Combiner, int8 with its per-layer quantization) far more than softmax, and what they measure is
the page tables of the machine, not the attention.

:func:`keep_freed_memory` turns ``mmap`` off for ``malloc`` (``M_MMAP_MAX = 0``: every block comes
from the heap; the threshold alone cannot keep blocks of 32 MiB and more off mmap, and a batch-64
MLP activation at 512 tokens is 32 MiB: a linear layer writing one took 27 ms with 8,400 faults
and 14 ms without), sets the mmap threshold to its maximum in case mmap is used anyway, and sets
the trim threshold and top pad high, so freed memory is reused instead of being returned and
faulted in again. The process keeps its peak memory until it exits (each job is its own process).
It changes where tensors live, never their values. Jobs and benchmarks call it first; it does
nothing off glibc (macOS, musl), where it returns False.
"""

from __future__ import annotations

import ctypes
import logging
import platform

log = logging.getLogger(__name__)

# mallopt parameters (glibc malloc.h)
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4

#: glibc's largest mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX); larger blocks are mmapped
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 1 << 30
TOP_PAD = 64 << 20

_done = False


def keep_freed_memory() -> bool:
    """Tune glibc's malloc as the module docstring says; True if it is now in effect.

    Idempotent; logs once. Returns False (and changes nothing) where the C library is not glibc.
    """
    global _done
    if _done:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_MMAP_MAX, 0),
                (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD))
    if not all(libc.mallopt(param, value) == 1 for param, value in settings):
        log.warning("glibc mallopt refused a setting; freed memory may go back to the OS")
        return False
    _done = True
    log.info("glibc malloc: every block from the heap (no mmap), freed memory kept up to %d MiB "
             "above the heap's top: no page faults on re-allocation", TRIM_THRESHOLD >> 20)
    return True
