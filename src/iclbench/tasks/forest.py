"""Random forests of random decision trees (the proposal's stretch class; SPEC section 1).

A function is ``T = n_trees`` independent trees of the :class:`~iclbench.tasks.tree.DecisionTree`
class (depth ``depth``, splits on uniformly drawn active coordinates at threshold 0, leaves
``N(0, 1)``), combined as ``y = sqrt(T) * mean_t tree_t(x) = sum_t tree_t(x) / sqrt(T)``.

Variance: each tree has ``E[tree_t(x)] = 0`` and ``Var(tree_t(x)) = 1`` (a leaf value is ``N(0, 1)``
whichever leaf ``x`` reaches), and two independent trees are uncorrelated (their leaf values are
independent of each other and of ``x``), so the plain mean of ``T`` trees has variance ``1 / T``.
The factor ``sqrt(T)`` restores ``Var(y) = 1``, the decision tree's: errors are divided by 1, and
"always predict 0" scores 1 as for every task (``tests/test_tasks.py`` checks it).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from iclbench.registry import at_least
from iclbench.tasks.base import TASKS, FunctionParams, Task
from iclbench.tasks.tree import DecisionTree


@TASKS.register("random_forest")
class RandomForest(Task):
    tags = frozenset({"tree", "forest"})
    options = {"n_trees": 5, "depth": 3}
    ranges = {"n_trees": at_least(1), "depth": at_least(1)}

    def __init__(self, n_dims: int, **options: object) -> None:
        super().__init__(n_dims, **options)
        self.n_trees: int = self.opts["n_trees"]
        self.tree = DecisionTree(n_dims, depth=self.opts["depth"])

    def sample_functions(
        self, batch_size: int, active_dims: int, generator: torch.Generator
    ) -> FunctionParams:
        trees = self.tree.sample_functions(batch_size * self.n_trees, active_dims, generator)
        # (B * T, ...) -> (B, T, ...): tree t of prompt b is row b * T + t
        return {k: v.view(batch_size, self.n_trees, -1) for k, v in trees.items()}

    def function_numel(self) -> int:
        return self.n_trees * self.tree.function_numel()

    def workspace_numel(self, n_points: int) -> int:
        # the inputs repeated per tree, and each tree's outputs
        return self.n_trees * n_points * (self.n_dims + 2)

    def evaluate(self, params: FunctionParams, xs: Tensor) -> Tensor:
        B, n, d = xs.shape
        T = params["coords"].shape[1]
        flat = {k: v.reshape(B * T, -1) for k, v in params.items()}
        each = self.tree.evaluate(flat, xs.repeat_interleave(T, dim=0))  # (B * T, n)
        return each.view(B, T, n).sum(dim=1) / math.sqrt(T)

    @property
    def normaliser(self) -> float:
        return 1.0
