"""Classical in-context baselines with the model's call signature (Garg et al. 2022, section 3).

Every baseline maps prompts ``xs`` (P, n, d) and ``ys`` (P, n) to predictions (P, n) where the
prediction at position ``i`` (0-based) uses only ``x_1..x_i`` (those before it and the query) and
``y_1..y_{i-1}``: ``y_i`` itself is never read. With no example yet (``i = 0``) each predicts 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from iclbench.registry import Registry


class Baseline:
    """Base class: subclasses set ``options`` (name -> default) and implement ``predict``."""

    options: ClassVar[Mapping[str, Any]] = {}
    #: the tasks this baseline is evaluated on; ``None`` means every task
    tasks: ClassVar[tuple[str, ...] | None] = None

    def __init__(self, **options: Any) -> None:
        self.check_options(options)
        self.opts: dict[str, Any] = {**self.options, **options}

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        unknown = set(options) - set(cls.options)
        if unknown:
            raise ValueError(f"unknown option(s) {sorted(unknown)}; known are: {sorted(cls.options)}")

    @classmethod
    def applies_to(cls, task: str) -> bool:
        return cls.tasks is None or task in cls.tasks

    def predict(self, xs: Tensor, ys: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


BASELINES: Registry[type[Baseline]] = Registry("baseline")


def build_baseline(name: str, options: Mapping[str, Any] | None = None) -> Baseline:
    return BASELINES.get(name)(**dict(options or {}))


@BASELINES.register("least_squares")
class LeastSquares(Baseline):
    """Minimum-norm least squares on the examples so far (``pinv``), in float64."""

    def predict(self, xs: Tensor, ys: Tensor) -> Tensor:
        xs64, ys64 = xs.double(), ys.double()
        preds = torch.zeros_like(ys64)
        for i in range(1, xs.shape[1]):
            w = torch.linalg.pinv(xs64[:, :i]) @ ys64[:, :i, None]  # (P, d, 1)
            preds[:, i] = (xs64[:, i, None, :] @ w)[:, 0, 0]
        return preds.to(ys.dtype)


@BASELINES.register("averaging")
class Averaging(Baseline):
    """``w = mean_j(x_j y_j)`` over the examples so far; predicts ``w . x_i``."""

    def predict(self, xs: Tensor, ys: Tensor) -> Tensor:
        products = xs * ys[..., None]  # (P, n, d)
        # exclusive prefix sums (over j < i), so y_i never enters the prediction at i
        sums = torch.cat([torch.zeros_like(products[:, :1]), products[:, :-1].cumsum(dim=1)], dim=1)
        counts = torch.arange(xs.shape[1], dtype=xs.dtype).clamp(min=1)[None, :, None]
        return ((sums / counts) * xs).sum(-1)


@BASELINES.register("knn3")
class NearestNeighbours(Baseline):
    """Mean ``y`` of the ``k`` nearest earlier inputs (all of them while fewer than ``k``)."""

    options = {"k": 3}

    def predict(self, xs: Tensor, ys: Tensor) -> Tensor:
        k = int(self.opts["k"])
        n = xs.shape[1]
        dist = torch.cdist(xs.double(), xs.double())  # (P, n, n)
        earlier = torch.ones(n, n, dtype=torch.bool).tril(diagonal=-1)  # j < i
        dist = dist.masked_fill(~earlier, float("inf"))
        preds = torch.zeros_like(ys)
        for i in range(1, n):
            m = min(k, i)
            idx = dist[:, i, :i].topk(m, largest=False).indices  # (P, m)
            preds[:, i] = torch.gather(ys[:, :i], 1, idx).mean(dim=1)
        return preds
