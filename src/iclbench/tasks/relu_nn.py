"""Two- and three-layer ReLU networks (Garg et al. 2022, section 5; SPEC section 1).

``y = sqrt(2 / r) * sum_j a_j relu(w_j . x)`` with ``w_j ~ N(0, I_d)``, ``a_j ~ N(0, 1)`` and
``r = hidden`` units (100 as in the paper; the reference code's default of 4 was a drift), so that
``Var(y) = d`` in distribution. ``relu_3nn`` adds a second hidden layer with the same scaling
(the proposal's stretch class; see :class:`Relu3NN`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from iclbench.registry import at_least
from iclbench.tasks.base import TASKS, FunctionParams, Task


@TASKS.register("relu_2nn")
class Relu2NN(Task):
    tags = frozenset({"relu_network", "two_layer"})
    options = {"hidden": 100}
    ranges = {"hidden": at_least(1)}

    def sample_functions(
        self, batch_size: int, active_dims: int, generator: torch.Generator
    ) -> FunctionParams:
        w1 = self._first_layer(batch_size, active_dims, generator)
        w2 = torch.randn(batch_size, int(self.opts["hidden"]), generator=generator)
        return {"w1": w1, "w2": w2}

    def _first_layer(self, batch_size: int, active_dims: int, generator: torch.Generator) -> Tensor:
        """``W_1`` (B, d, r), zero on the inactive input dimensions."""
        w1 = torch.randn(batch_size, self.n_dims, int(self.opts["hidden"]), generator=generator)
        w1[:, active_dims:, :] = 0.0
        return w1

    def function_numel(self) -> int:
        r = int(self.opts["hidden"])
        return self.n_dims * r + r

    def workspace_numel(self, n_points: int) -> int:
        return n_points * int(self.opts["hidden"])  # hidden activations

    def evaluate(self, params: FunctionParams, xs: Tensor) -> Tensor:
        r = params["w2"].shape[1]
        hidden = torch.relu(torch.bmm(xs, params["w1"]))  # (B, n, r)
        return math.sqrt(2.0 / r) * torch.einsum("bnr,br->bn", hidden, params["w2"])

    @property
    def normaliser(self) -> float:
        return float(self.n_dims)


@TASKS.register("relu_3nn")
class Relu3NN(Relu2NN):
    """Three-layer ReLU networks with ``relu_2nn``'s variance scaling, ``Var(y) = d``.

    ``y = sqrt(2 / r) * sum_k a_k relu(h_k)``, ``h = sqrt(2 / r) * W_2 relu(W_1 x)``, with ``W_1``
    (r, d), ``W_2`` (r, r) and ``a`` (r,) all ``N(0, 1)`` and ``r = hidden`` units in both hidden
    layers. Each layer keeps the second moment: ``w_1j . x`` has variance ``|x|^2`` (``d`` on
    average), ``relu`` halves a symmetric variable's second moment, and the ``sqrt(2 / r)`` factor
    over ``r`` units doubles it back; so ``E[h_k^2] = d`` and, the same way, ``Var(y) = d``, as for
    ``relu_2nn`` (He scaling). Errors are divided by ``d``.
    """

    tags = frozenset({"relu_network", "three_layer"})

    def sample_functions(
        self, batch_size: int, active_dims: int, generator: torch.Generator
    ) -> FunctionParams:
        r = int(self.opts["hidden"])
        w1 = self._first_layer(batch_size, active_dims, generator)
        w2 = torch.randn(batch_size, r, r, generator=generator)
        w3 = torch.randn(batch_size, r, generator=generator)
        return {"w1": w1, "w2": w2, "w3": w3}

    def function_numel(self) -> int:
        r = int(self.opts["hidden"])
        return self.n_dims * r + r * r + r

    def workspace_numel(self, n_points: int) -> int:
        return 2 * n_points * int(self.opts["hidden"])  # both hidden layers' activations

    def evaluate(self, params: FunctionParams, xs: Tensor) -> Tensor:
        r = params["w3"].shape[1]
        scale = math.sqrt(2.0 / r)
        h1 = torch.relu(torch.bmm(xs, params["w1"]))  # (B, n, r)
        h2 = torch.relu(scale * torch.bmm(h1, params["w2"]))  # (B, n, r)
        return scale * torch.einsum("bnr,br->bn", h2, params["w3"])
