"""The pseudo-inverse both Nystrom designs use (:mod:`iclbench.attention.nystrom`): Nystromformer's
iteration (Xiong et al. 2021, eq. 16), or ``torch.linalg.pinv`` in float64 for ``pinv: exact``."""

from __future__ import annotations

import torch
from torch import Tensor


def iterative_pinv(a: Tensor, iterations: int) -> Tensor:
    """Pseudo-inverse of each matrix in ``a`` (..., m, m) by Nystromformer's iteration (eq. 16).

    ``Z_0 = A^T / (||A||_1 ||A||_inf)`` with the norms of each matrix (max column sum, max row sum);
    an all-zero matrix gets ``Z = 0``. Zero rows and columns stay zero, so a smaller matrix padded
    with zeros gets its own pseudo-inverse padded with zeros.
    """
    norm = a.abs().sum(-2).amax(-1) * a.abs().sum(-1).amax(-1)  # (...,)
    z = a.transpose(-1, -2) / norm.clamp_min(torch.finfo(a.dtype).tiny)[..., None, None]
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    for _ in range(iterations):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


def pinv_of(a: Tensor, iterations: int | None) -> Tensor:
    """Pseudo-inverse of each matrix in ``a`` (..., m, m): :func:`iterative_pinv` with
    ``iterations``, or, for ``None`` (option ``pinv: exact``), ``torch.linalg.pinv`` in float64 by
    SVD (m is small). The iteration is exact only in exact arithmetic: in float32 its error can
    grow again with more iterations once the matrix is ill-conditioned."""
    if iterations is None:
        return torch.linalg.pinv(a.double(), hermitian=False).to(a.dtype)
    return iterative_pinv(a, iterations)
