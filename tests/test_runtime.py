"""iclbench.runtime: glibc malloc kept from returning freed memory (no page faults per forward)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# a child process, so that the setting (process-wide, for good) does not leak into other tests:
# the default-width softmax model (2 layers) at batch 64 and 512 tokens, whose MLP hidden layer is
# 32 MiB (glibc's default mmaps a block that large on every call), 3 forwards to settle, then the
# minor page faults of 5 (measured: 0-2,048 tuned, 78,000-96,000 with glibc's defaults). A
# 4096-token combiner model served here until blocks began to run GELU in place: its
# reallocations stopped faulting under the defaults too (0-17,000 faults, run to run)
CHILD = """
import resource, sys, torch
from iclbench.model import Decoder, ModelSpec
from iclbench.runtime import keep_freed_memory
if sys.argv[1] == "tuned":
    assert keep_freed_memory() and keep_freed_memory()  # idempotent
T, B = 512, 64
model = Decoder(ModelSpec(5, T, 64, 2, 2, "softmax", {})).eval()
xs, ys = torch.randn(B, T // 2, 5), torch.randn(B, T // 2)
with torch.inference_mode():
    for _ in range(3):
        model(xs, ys)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        model(xs, ys)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], check=True, capture_output=True,
                         text=True)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_keep_freed_memory_removes_the_page_faults_of_reallocation() -> None:
    tuned, untuned = _faults("tuned"), _faults("default")
    assert tuned * 4 < untuned, (tuned, untuned)


def test_keep_freed_memory_is_a_no_op_off_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    import iclbench.runtime as runtime

    monkeypatch.setattr(runtime, "_done", False)
    monkeypatch.setattr(runtime.platform, "libc_ver", lambda: ("", ""))
    assert runtime.keep_freed_memory() is False
