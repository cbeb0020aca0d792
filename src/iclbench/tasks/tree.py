"""Depth-``depth`` decision trees (Garg et al. 2022, section 5; SPEC section 1).

A full binary tree: each internal node splits on a coordinate drawn uniformly among the active
ones with threshold 0 (go right iff ``x[c] > 0``); leaf values are ``N(0, 1)``. Nodes are stored in
heap order: the children of node ``i`` are ``2i + 1`` (left) and ``2i + 2`` (right).
"""

from __future__ import annotations

import torch
from torch import Tensor

from iclbench.registry import at_least
from iclbench.tasks.base import TASKS, FunctionParams, Task


@TASKS.register("decision_tree")
class DecisionTree(Task):
    tags = frozenset({"tree"})
    options = {"depth": 4}
    ranges = {"depth": at_least(1)}

    def sample_functions(
        self, batch_size: int, active_dims: int, generator: torch.Generator
    ) -> FunctionParams:
        depth = int(self.opts["depth"])
        n_internal = 2**depth - 1
        coords = torch.randint(0, active_dims, (batch_size, n_internal), generator=generator)
        leaves = torch.randn(batch_size, 2**depth, generator=generator)
        return {"coords": coords, "leaves": leaves}

    def function_numel(self) -> int:
        depth = int(self.opts["depth"])
        return (2**depth - 1) + 2**depth  # split coordinates and leaves

    def evaluate(self, params: FunctionParams, xs: Tensor) -> Tensor:
        coords, leaves = params["coords"], params["leaves"]
        depth = int(self.opts["depth"])
        node = torch.zeros(xs.shape[:2], dtype=torch.long, device=xs.device)  # (B, n)
        for _ in range(depth):
            c = torch.gather(coords, 1, node)  # (B, n): split coordinate at each point's node
            go_right = torch.gather(xs, 2, c.unsqueeze(-1)).squeeze(-1) > 0
            node = 2 * node + 1 + go_right.long()
        return torch.gather(leaves, 1, node - (2**depth - 1))

    @property
    def normaliser(self) -> float:
        return 1.0
