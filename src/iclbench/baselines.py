"""Classical in-context baselines with the model's call signature (Garg et al. 2022, section 3).

Every baseline maps prompts ``xs`` (P, n, d) and ``ys`` (P, n) to predictions (P, n) where the
prediction at position ``i`` (0-based) uses only ``x_1..x_i`` (those before it and the query) and
``y_1..y_{i-1}``: ``y_i`` itself is never read. With no example yet (``i = 0``) each predicts 0.
Vector labels ``ys`` (P, n, m) (tasks with ``vector_output``) are predicted one output dimension at
a time, (P, n, m) out, by every baseline whose ``vector_outputs`` is true; the others (the networks
trained on the prompt, whose single read-out is the architecture being compared) declare
themselves inapplicable to such tasks, so a config that lists them simply skips those pairs.
A baseline applies to the tasks that carry every tag of its ``requires`` (a task's ``tags``: Lasso
requires ``sparse``, the tree fits ``tree``), so a new task gets the baselines its tags call for.

The settings of the learned baselines are the paper's (appendix A; dtsip/in-context-learning,
``src/models.py``): Lasso without intercept (alpha 1e-2 in the paper's tables), a greedy (CART)
regression tree, XGBoost with 50 trees of depth 4 and learning rate 0.1, and a 2-layer ReLU network
with 100 hidden units trained on the prompt by full-batch Adam (lr 5e-3, 5000 steps). Those that fit
one model per (prompt, position) are slow; their ``max_prompts`` option scores them on the first
``max_prompts`` prompts of each file only, and ``max_prompts_ood`` (when set) on fewer in the many
OOD levels (the ``n_prompts`` column says how many).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from iclbench.ood import IN_DISTRIBUTION
from iclbench.registry import Configurable, Registry, above, at_least
from iclbench.seeding import generator
from iclbench.tasks import VECTOR_OUTPUT, has_tags

#: options of the slow baselines: score only the first N prompts of each file (null: all of
#: them), each null or an integer >= 1; a baseline that has them adds these to its ``ranges``
PROMPT_LIMITS = {"max_prompts": at_least(1), "max_prompts_ood": at_least(1)}


class Baseline(Configurable):
    """Base class: subclasses set ``options`` (name -> default) with their ``ranges``, the task
    tags they ``require``, and implement ``_predict`` (scalar labels); ``predict`` handles
    vector labels one output dimension at a time."""

    #: the task tags this baseline needs (it is evaluated on the tasks with every one of them);
    #: empty: every task
    requires: ClassVar[frozenset[str]] = frozenset()
    #: whether it handles vector labels (one output dimension at a time); if not, it does not
    #: apply to tasks tagged ``vector_output``
    vector_outputs: ClassVar[bool] = True

    def __init__(self, **options: Any) -> None:
        self.opts: dict[str, Any] = self.check_options(options)

    @classmethod
    def applies_to(cls, task: str) -> bool:
        return has_tags(task, cls.requires) and (
            cls.vector_outputs or not has_tags(task, frozenset({VECTOR_OUTPUT})))

    @classmethod
    def workspace_bytes(cls, n_prompts: int, n_points: int, n_dims: int,
                        options: Mapping[str, Any]) -> int:
        """Bytes ``predict`` holds at once beyond its inputs, for one file's prompts (the memory
        bound of :mod:`iclbench.budget`). The default covers the closed-form baselines: float64
        copies of the prompts, pairwise distances (k-NN) and per-position pseudo-inverses."""
        return 8 * n_prompts * n_points * (2 * n_points + 4 * n_dims + n_dims * n_dims)

    def predict(self, xs: Tensor, ys: Tensor) -> Tensor:
        """Predictions shaped like ``ys``: (P, n), or (P, n, m) one output dimension at a time."""
        if ys.dim() == 2:
            return self._predict(xs, ys)
        if not self.vector_outputs:
            raise ValueError(f"{type(self).__name__} predicts scalar labels only, got ys of shape "
                             f"{tuple(ys.shape)}")
        return torch.stack([self._predict(xs, ys[..., j]) for j in range(ys.shape[-1])], dim=-1)

    def _predict(self, xs: Tensor, ys: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Predictions (P, n) of scalar labels ``ys`` (P, n)."""
        raise NotImplementedError

    @property
    def max_prompts(self) -> int | None:
        """Prompts of each file to score (``None``: all), from the ``max_prompts`` option."""
        value = self.opts.get("max_prompts")
        return None if value is None else int(value)

    def prompt_limit(self, ood: str) -> int | None:
        """Prompts to score in setting ``ood``: ``max_prompts_ood`` out of distribution if set."""
        value = self.opts.get("max_prompts_ood")
        return self.max_prompts if ood == IN_DISTRIBUTION or value is None else int(value)


BASELINES: Registry[type[Baseline]] = Registry("baseline")


def build_baseline(name: str, options: Mapping[str, Any] | None = None) -> Baseline:
    return BASELINES.get(name)(**dict(options or {}))


@BASELINES.register("least_squares")
class LeastSquares(Baseline):
    """Minimum-norm least squares on the examples so far (``pinv``), in float64."""

    def _predict(self, xs: Tensor, ys: Tensor) -> Tensor:
        xs64, ys64 = xs.double(), ys.double()
        preds = torch.zeros_like(ys64)
        for i in range(1, xs.shape[1]):
            w = torch.linalg.pinv(xs64[:, :i]) @ ys64[:, :i, None]  # (P, d, 1)
            preds[:, i] = (xs64[:, i, None, :] @ w)[:, 0, 0]
        return preds.to(ys.dtype)


@BASELINES.register("averaging")
class Averaging(Baseline):
    """``w = mean_j(x_j y_j)`` over the examples so far; predicts ``w . x_i``."""

    def _predict(self, xs: Tensor, ys: Tensor) -> Tensor:
        products = xs * ys[..., None]  # (P, n, d)
        # exclusive prefix sums (over j < i), so y_i never enters the prediction at i
        sums = torch.cat([torch.zeros_like(products[:, :1]), products[:, :-1].cumsum(dim=1)], dim=1)
        counts = torch.arange(xs.shape[1], dtype=xs.dtype).clamp(min=1)[None, :, None]
        return ((sums / counts) * xs).sum(-1)


@BASELINES.register("knn3")
class NearestNeighbours(Baseline):
    """Mean ``y`` of the ``k`` nearest earlier inputs (all of them while fewer than ``k``)."""

    options = {"k": 3}
    ranges = {"k": at_least(1)}

    def _predict(self, xs: Tensor, ys: Tensor) -> Tensor:
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


@BASELINES.register("zero")
class Zero(Baseline):
    """Always 0: its error is ``E[y^2] / norm``, what "1" means in each OOD setting."""

    def _predict(self, xs: Tensor, ys: Tensor) -> Tensor:
        return torch.zeros_like(ys)


class PerPromptFit(Baseline):
    """A scikit-learn-style regressor fitted on ``(x_1..x_i, y_1..y_i)`` of one prompt at a time.

    Subclasses implement ``fit_predict(train_x (i, d), train_y (i,), query (1, d)) -> float``.
    Inputs go to float64 NumPy arrays once per call; the loops are over positions and prompts,
    ``n * P`` fits in all (times ``m`` for vector labels: one fit per output dimension).
    """

    def fit_predict(self, train_x: np.ndarray, train_y: np.ndarray, query: np.ndarray) -> float:
        raise NotImplementedError  # pragma: no cover - abstract

    def _predict(self, xs: Tensor, ys: Tensor) -> Tensor:
        x, y = xs.double().numpy(), ys.double().numpy()
        P, n, _ = x.shape
        preds = np.zeros((P, n))
        for p in range(P):
            for i in range(1, n):
                preds[p, i] = self.fit_predict(x[p, :i], y[p, :i], x[p, i : i + 1])
        return torch.from_numpy(preds).to(ys.dtype)


@BASELINES.register("lasso")
class LassoBaseline(PerPromptFit):
    """Lasso, ``min (1/2i)|y - Xw|^2 + alpha |w|_1``, no intercept (sparse linear regression)."""

    options = {"alpha": 0.01, "max_iter": 100000, "max_prompts": None,
               "max_prompts_ood": None}
    ranges = {"alpha": at_least(0), "max_iter": at_least(1), **PROMPT_LIMITS}
    requires = frozenset({"sparse"})

    def fit_predict(self, train_x: np.ndarray, train_y: np.ndarray, query: np.ndarray) -> float:
        from sklearn.linear_model import Lasso

        model = Lasso(alpha=float(self.opts["alpha"]), fit_intercept=False,
                      max_iter=int(self.opts["max_iter"]))
        # inputs are float64 already: skipping scikit-learn's checks makes a fit ~2.5x faster
        model.fit(np.asfortranarray(train_x), train_y.copy(), check_input=False)
        return float(query[0] @ model.coef_)

    def _predict(self, xs: Tensor, ys: Tensor) -> Tensor:
        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            # a prefix with fewer examples than dimensions may stop at max_iter: the fit is still
            # the best available estimate (the paper's code raised instead)
            warnings.simplefilter("ignore", ConvergenceWarning)
            return super()._predict(xs, ys)


@BASELINES.register("greedy_tree")
class GreedyTree(PerPromptFit):
    """A greedy (CART) regression tree of depth ``max_depth`` (decision trees)."""

    options = {"max_depth": 2, "max_prompts": None,
               "max_prompts_ood": None}
    ranges = {"max_depth": at_least(1), **PROMPT_LIMITS}
    requires = frozenset({"tree"})

    def fit_predict(self, train_x: np.ndarray, train_y: np.ndarray, query: np.ndarray) -> float:
        from sklearn.tree import DecisionTreeRegressor

        depth = self.opts["max_depth"]
        model = DecisionTreeRegressor(max_depth=None if depth is None else int(depth),
                                      random_state=0)
        # scikit-learn trees work in float32; converting here lets them skip their input checks
        x32 = np.asarray(train_x, dtype=np.float32)
        model.fit(x32, train_y, check_input=False)
        return float(model.predict(np.asarray(query, dtype=np.float32), check_input=False)[0])


@BASELINES.register("xgboost")
class XGBoost(PerPromptFit):
    """Gradient-boosted trees (XGBoost; the paper's tuned 50 trees, depth 4, lr 0.1)."""

    options = {"n_estimators": 50, "max_depth": 4, "learning_rate": 0.1, "max_prompts": None,
               "max_prompts_ood": None}
    ranges = {"n_estimators": at_least(1), "max_depth": at_least(0),
              "learning_rate": above(0), **PROMPT_LIMITS}
    requires = frozenset({"tree"})

    def fit_predict(self, train_x: np.ndarray, train_y: np.ndarray, query: np.ndarray) -> float:
        import xgboost as xgb

        # one thread: with at most a few hundred points per fit, threads only add overhead
        model = xgb.XGBRegressor(n_estimators=int(self.opts["n_estimators"]),
                                 max_depth=int(self.opts["max_depth"]),
                                 learning_rate=float(self.opts["learning_rate"]),
                                 tree_method="exact", n_jobs=1, random_state=0)
        return float(model.fit(train_x, train_y).predict(query)[0])


@BASELINES.register("random_forest_fit")
class RandomForestFit(PerPromptFit):
    """scikit-learn's ``RandomForestRegressor`` (bootstrap, all features per split; forests)."""

    options = {"n_estimators": 100, "max_depth": None, "seed": 0, "max_prompts": None,
               "max_prompts_ood": None}
    ranges = {"n_estimators": at_least(1), "max_depth": at_least(1), "seed": at_least(0),
              **PROMPT_LIMITS}
    requires = frozenset({"tree"})

    def fit_predict(self, train_x: np.ndarray, train_y: np.ndarray, query: np.ndarray) -> float:
        from sklearn.ensemble import RandomForestRegressor

        depth = self.opts["max_depth"]
        model = RandomForestRegressor(n_estimators=int(self.opts["n_estimators"]),
                                      max_depth=None if depth is None else int(depth),
                                      random_state=int(self.opts["seed"]), n_jobs=1)
        x32 = np.asarray(train_x, dtype=np.float32)
        return float(model.fit(x32, train_y).predict(np.asarray(query, dtype=np.float32))[0])


class GradientDescentNN(Baseline):
    """A ``depth``-layer ReLU network trained on each prompt prefix by full-batch Adam.

    One network per (prompt, position ``i``), trained for ``steps`` Adam steps on the mean squared
    error over its ``i`` examples; all ``P * (n - 1)`` networks train at once as batched tensors
    (weights (P * (n - 1), fan_in, fan_out), batched matmuls), each on its own masked loss, so they
    never interact. Every hidden layer has ``hidden`` units. The initialisation is PyTorch's
    ``nn.Linear`` default (uniform in ``+-1/sqrt(fan_in)``), as in the paper's ``NeuralNetwork``;
    the paper's batch of 100 covers every prefix, hence full batch. Scalar labels only: its one
    read-out unit is the architecture of the task it is compared on.
    """

    options = {"hidden": 100, "lr": 5e-3, "steps": 5000, "seed": 0, "max_prompts": None,
               "max_prompts_ood": None}
    ranges = {"hidden": at_least(1), "steps": at_least(1), "seed": at_least(0),
              "lr": above(0), **PROMPT_LIMITS}
    vector_outputs = False
    #: layers of weights (2: one hidden layer)
    depth: ClassVar[int] = 2
    #: activations (prompts x networks x points x hidden per hidden layer), plus hidden-to-hidden
    #: weights with their Adam state, per chunk of prompts: ~80 MB
    chunk_elements: ClassVar[int] = 20_000_000

    @classmethod
    def workspace_bytes(cls, n_prompts: int, n_points: int, n_dims: int,
                        options: Mapping[str, Any]) -> int:
        h = int({**cls.options, **options}["hidden"])
        per_prompt = n_points * (n_points * h * (cls.depth - 1) + 4 * h * h * (cls.depth - 2)
                                 + 4 * h * (n_dims + 2))
        # a chunk's activations (at least one prompt) with their gradients, the weights with
        # their gradients and Adam's two moments
        chunk = max(cls.chunk_elements, per_prompt)
        return 4 * 6 * chunk + super().workspace_bytes(n_prompts, n_points, n_dims, options)

    def _predict(self, xs: Tensor, ys: Tensor) -> Tensor:
        """Chunks of prompts (to bound memory), each trained as one batch of networks."""
        n, h = xs.shape[1], int(self.opts["hidden"])
        if n == 1:
            return torch.zeros_like(ys)
        per_prompt = (n - 1) ** 2 * h * (self.depth - 1) + (n - 1) * 4 * h * h * (self.depth - 2)
        chunk = max(1, self.chunk_elements // per_prompt)
        rng = generator(int(self.opts["seed"]), f"gd_{self.depth}nn", str(xs.shape[2]), str(h))
        return torch.cat([self._train_and_predict(xs[s : s + chunk], ys[s : s + chunk], rng)
                          for s in range(0, xs.shape[0], chunk)])

    def _train_and_predict(self, xs: Tensor, ys: Tensor, rng: torch.Generator) -> Tensor:
        P, n, d = xs.shape
        h, m = int(self.opts["hidden"]), n - 1  # network k predicts position k + 1

        def uniform(*shape: int, fan_in: int) -> Tensor:
            bound = 1.0 / math.sqrt(fan_in)
            return ((torch.rand(*shape, generator=rng) * 2 - 1) * bound).requires_grad_()

        # network k (of m) sits at batch index p * m + k; bmm over all P * m networks at once
        hidden_layers = []  # (weight, bias) of each hidden layer, drawn in order
        fan_in = d
        for _ in range(self.depth - 1):
            hidden_layers.append((uniform(P * m, fan_in, h, fan_in=fan_in),
                                  uniform(P * m, 1, h, fan_in=fan_in)))
            fan_in = h
        w_out, b_out = uniform(P * m, h, 1, fan_in=h), uniform(P, m, 1, fan_in=h)
        params = [t for layer in hidden_layers for t in layer] + [w_out, b_out]
        train_x, train_y = xs[:, :m].float(), ys[:, :m].float()  # examples 0 .. n - 2
        # weight of example j in network k's mean loss: 1 / (k + 1) if j <= k, else 0
        k = torch.arange(m)
        weight = (k[None, :] <= k[:, None]).float() / (k[:, None] + 1.0)  # (m nets, m examples)

        def forward(x: Tensor) -> Tensor:  # x (P, j, d) -> (P, m, j): every network at every x
            hidden = x[:, None].expand(P, m, *x.shape[1:]).reshape(P * m, x.shape[1], d)
            for w, b in hidden_layers:
                hidden = torch.relu(torch.baddbmm(b, hidden, w))  # (P * m, j, h)
            return torch.bmm(hidden, w_out).reshape(P, m, -1) + b_out

        opt = torch.optim.Adam(params, lr=float(self.opts["lr"]))
        for _ in range(int(self.opts["steps"])):
            opt.zero_grad(set_to_none=True)
            loss = ((forward(train_x) - train_y[:, None, :]).square() * weight).sum()
            loss.backward()
            opt.step()
        with torch.no_grad():
            out = forward(xs[:, 1:].float())  # (P, m, m): network k at every later input
            preds = torch.diagonal(out, dim1=1, dim2=2)  # network k at its query x_{k+1}
        return torch.cat([torch.zeros_like(ys[:, :1]), preds.to(ys.dtype)], dim=1)


@BASELINES.register("gd_2nn")
class GradientDescent2NN(GradientDescentNN):
    """2-layer ReLU network (100 hidden) trained on the prompt (relu_2nn; the paper's)."""

    requires = frozenset({"relu_network", "two_layer"})
    depth = 2


@BASELINES.register("gd_3nn")
class GradientDescent3NN(GradientDescentNN):
    """3-layer ReLU network (``hidden`` units in both hidden layers) trained on the prompt
    (relu_3nn: the task's own architecture)."""

    requires = frozenset({"relu_network", "three_layer"})
    depth = 3
