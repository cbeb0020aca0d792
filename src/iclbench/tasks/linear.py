"""Linear and sparse linear regression (Garg et al. 2022, section 2; SPEC section 1).

``y = w . x`` with ``w ~ N(0, I_d)``; the sparse class keeps ``sparsity`` coordinates of ``w``,
chosen uniformly among the active ones, and zeroes the rest.
"""

from __future__ import annotations

import torch
from torch import Tensor

from iclbench.tasks.base import TASKS, FunctionParams, Task


@TASKS.register("linear_regression")
class LinearRegression(Task):
    tags = frozenset({"linear", "dense"})

    def sample_functions(
        self, batch_size: int, active_dims: int, generator: torch.Generator
    ) -> FunctionParams:
        w = torch.randn(batch_size, self.n_dims, generator=generator)
        w[:, active_dims:] = 0.0
        return {"w": w}

    def evaluate(self, params: FunctionParams, xs: Tensor) -> Tensor:
        return torch.einsum("bnd,bd->bn", xs, params["w"])

    @property
    def normaliser(self) -> float:
        return float(self.n_dims)


@TASKS.register("sparse_linear_regression")
class SparseLinearRegression(LinearRegression):
    tags = frozenset({"linear", "sparse"})
    options = {"sparsity": 3}

    def __init__(self, n_dims: int, **options: object) -> None:
        super().__init__(n_dims, **options)
        # its range depends on n_dims, so it is checked here rather than declared in ranges
        if not 1 <= self.opts["sparsity"] <= n_dims:
            raise ValueError(
                f"sparsity must lie in [1, n_dims={n_dims}], "
                f"got {self.opts['sparsity']}"
            )

    def sample_functions(
        self, batch_size: int, active_dims: int, generator: torch.Generator
    ) -> FunctionParams:
        w = torch.randn(batch_size, self.n_dims, generator=generator)
        s = min(int(self.opts["sparsity"]), active_dims)
        # a uniform random support of size s among the active coordinates, per prompt
        scores = torch.rand(batch_size, active_dims, generator=generator)
        support = scores.argsort(dim=1)[:, :s]
        mask = torch.zeros(batch_size, self.n_dims, dtype=torch.bool)
        mask.scatter_(1, support, True)
        return {"w": w * mask}

    @property
    def normaliser(self) -> float:
        return float(self.opts["sparsity"])
