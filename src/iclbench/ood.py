"""Out-of-distribution evaluation prompts: registered transforms with levels (SPEC section 4).

A transform turns one fixed set of in-distribution functions and inputs into the prompts of one
*level* of an OOD setting. The functions are never resampled or changed: every setting starts from
the same functions and inputs as the in-distribution file (``none``), so a level's error differs
from the in-distribution error only through the transform. Transforms that change the inputs
re-evaluate the unchanged functions at the new inputs; only ``scale_y`` (and ``noisy``, whose
labels carry noise) change the labels.

A setting applies to the tasks that carry every tag of its ``requires`` (a task's ``tags``). The
proposal's three settings apply to every task:

- ``shift``: ``x <- x + c u`` for one unit vector ``u`` drawn once per (setting, task) from a seeded
  generator; the inputs' mean lies at distance ``c`` from the origin.
- ``scale_x``: ``x <- c x``.
- ``scale_y``: ``y <- c f(x)``.

Garg et al. (2022, section 4 and appendix) test linear regression under five more, which
dtsip/in-context-learning implements in ``src/eval.py`` (``build_evals``, ``gen_random_quadrants``,
``gen_orthogonal_train_test``), ``src/samplers.py`` (``sample_transformation``) and ``src/tasks.py``
(``NoisyLinearRegression``); they require the tags ``linear`` and ``dense`` (dense linear
regression, not its sparse variant). Each is generalised to a level ``c`` whose value 0 (or 1 for
``half_subspace``) is the in-distribution setting and whose paper value is given:

- ``skewed``: ``x <- x T`` with ``T = U diag(l) U^T sqrt(d / sum l^2)``, ``l_i = (i + 1)^-c``,
  ``U`` a random rotation, so ``E|x|^2 = d``; paper ``c = 1`` (eigenvalues ``1/(i+1)``).
- ``half_subspace``: the same with ``l_i = 1`` for the first ``max(1, floor(c d))`` directions and 0
  for the rest: inputs on a random subspace of dimension ``c d``; paper ``c = 0.5``.
- ``random_quadrants``: every coordinate of every in-context example is moved, with probability
  ``c``, into one orthant drawn per prompt (``x_j <- |x_j| s``); the query stays ``N(0, I)``, so it
  lies in that orthant with probability ``2^-d`` only; paper ``c = 1``.
- ``orthogonal_query``: the query at position ``i`` is ``x_i - c P_i x_i``, rescaled to ``|x_i|``,
  where ``P_i`` projects onto the span of the ``i`` earlier examples: at ``c = 1`` (the paper's) the
  query is orthogonal to every example, so the examples say nothing about its label. From ``i = d``
  on the examples span the space, no orthogonal direction is left, and the query is ``x_i``.
- ``noisy``: ``y <- (f(x) + c e) sqrt(V / (V + c^2))`` with ``e ~ N(0, 1)`` and ``V`` the task's
  in-distribution Var(y), so Var(y) stays ``V``; errors are taken against the noisy label, as in
  the paper (which used ``c = 1`` and renormalised by the batch's empirical std instead).

``random_quadrants`` and ``orthogonal_query`` draw the query at position ``i`` from another
distribution than the in-context examples before it, so they store ``query_xs``/``query_ys``
beside ``xs``/``ys``; :func:`iclbench.evaluate.evaluate` then predicts position ``i`` from
``xs[:i]`` followed by ``query_xs[i]`` (one call per position, the paper's ``eval_batch``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from iclbench.registry import Configurable, Registry
from iclbench.tasks import FunctionParams, Task, has_tags

#: the in-distribution setting: always evaluated, never listed under ``ood:`` in the config
IN_DISTRIBUTION = "none"


@dataclass(frozen=True)
class LevelPrompts:
    """One level's prompts; ``query_*`` is None when the query is ``xs[:, i]`` itself."""

    xs: Tensor  # (P, n, d): in-context examples
    ys: Tensor  # (P, n)
    query_xs: Tensor | None = None  # (P, n, d): the query at position i
    query_ys: Tensor | None = None  # (P, n)


class Transform(Configurable):
    """Base: subclasses set ``options`` (with their ``ranges``) and ``requires``; override
    ``inputs``, ``labels`` or ``apply``."""

    #: the task tags this setting needs (it applies to the tasks with every one of them); empty:
    #: every task
    requires: ClassVar[frozenset[str]] = frozenset()
    #: True when the transform changes labels, not only inputs (the function itself is never
    #: changed: input transforms re-evaluate it at the new inputs)
    changes_labels: ClassVar[bool] = False
    #: the level at which the transform is the identity (the in-distribution point of a figure)
    identity_level: ClassVar[float] = 0.0

    def __init__(self, **options: Any) -> None:
        self.opts: dict[str, Any] = self.check_options(options)

    @classmethod
    def applies_to(cls, task: str) -> bool:
        return has_tags(task, cls.requires)

    def check_level(self, level: float) -> None:
        """Raise ``ValueError`` for a level outside the setting's range."""

    def check_levels(self, levels: Sequence[float]) -> None:
        if not levels:
            raise ValueError("levels: needs at least one level")
        if len(set(levels)) != len(levels):
            raise ValueError(f"levels: duplicate levels in {list(levels)}")
        for level in levels:
            self.check_level(float(level))

    def inputs(self, xs: Tensor, level: float, rng: torch.Generator) -> Tensor:
        """Transformed inputs (P, n, d); the identity by default."""
        return xs

    def labels(self, task: Task, ys: Tensor, level: float, rng: torch.Generator) -> Tensor:
        """Transformed labels (P, n) of ``f(transformed inputs)``; the identity by default."""
        return ys

    def apply(
        self, task: Task, params: FunctionParams, xs: Tensor, level: float, rng: torch.Generator
    ) -> LevelPrompts:
        """Prompts of one level from in-distribution functions ``params`` and inputs ``xs``.

        ``rng`` is seeded identically for every level of a (setting, task), so random parts (a
        direction, a rotation, sign patterns, label noise) are shared across levels: levels differ
        only by ``level``.
        """
        new_xs = self.inputs(xs, level, rng)
        return LevelPrompts(new_xs, self.labels(task, task.evaluate(params, new_xs), level, rng))


OOD: Registry[type[Transform]] = Registry("OOD setting")


def build_transform(name: str, options: Mapping[str, Any] | None = None) -> Transform:
    return OOD.get(name)(**dict(options or {}))


def _at_least(level: float, low: float, what: str, strict: bool = False) -> None:
    if level < low or (strict and level == low):
        raise ValueError(f"level {level} out of range: {what}")


@OOD.register(IN_DISTRIBUTION)
class InDistribution(Transform):
    """The identity: the in-distribution prompts (one level, 0)."""

    def check_level(self, level: float) -> None:
        if level != 0.0:
            raise ValueError(f"level {level} out of range: the in-distribution setting has level 0")


@OOD.register("shift")
class Shift(Transform):
    """``x <- x + c u``: inputs centred at distance ``c`` from the origin, along a fixed ``u``."""

    def check_level(self, level: float) -> None:
        _at_least(level, 0.0, "a shift is a distance >= 0")

    def inputs(self, xs: Tensor, level: float, rng: torch.Generator) -> Tensor:
        u = torch.randn(xs.shape[-1], generator=rng, dtype=xs.dtype)
        return xs + level * u / u.norm()


@OOD.register("scale_x")
class ScaleX(Transform):
    """``x <- c x`` (the paper's scale-x with ``c`` in {1/3, 1/2, 2, 3})."""

    identity_level = 1.0

    def check_level(self, level: float) -> None:
        _at_least(level, 0.0, "a scale must be > 0", strict=True)

    def inputs(self, xs: Tensor, level: float, rng: torch.Generator) -> Tensor:
        return level * xs


@OOD.register("scale_y")
class ScaleY(Transform):
    """``y <- c f(x)``: the function's outputs scaled; inputs unchanged."""

    identity_level = 1.0

    changes_labels = True

    def check_level(self, level: float) -> None:
        _at_least(level, 0.0, "a scale must be > 0", strict=True)

    def labels(self, task: Task, ys: Tensor, level: float, rng: torch.Generator) -> Tensor:
        return level * ys


def random_rotation(d: int, rng: torch.Generator) -> Tensor:
    """A Haar-random orthogonal (d, d) float64 matrix (QR of a Gaussian matrix, sign-fixed)."""
    q, r = torch.linalg.qr(torch.randn(d, d, generator=rng, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def covariance_transform(eigenvalues: Tensor, rng: torch.Generator) -> Tensor:
    """``U diag(l) U^T sqrt(d / sum l^2)`` (the paper's ``sample_transformation(normalize=True)``).

    ``x T`` for ``x ~ N(0, I)`` has covariance ``T^T T`` with trace ``d``: the inputs' mean squared
    norm is unchanged, only its distribution over directions.
    """
    d = eigenvalues.shape[0]
    u = random_rotation(d, rng)
    return (u * eigenvalues) @ u.T * math.sqrt(d / float(eigenvalues.square().sum()))


#: the tasks Garg et al.'s settings were made for: linear regression with a dense ``w``
DENSE_LINEAR = frozenset({"linear", "dense"})


@OOD.register("skewed")
class Skewed(Transform):
    """Skewed covariance: eigenvalues ``(i + 1)^-c`` in a random basis (paper: ``c = 1``)."""

    requires = DENSE_LINEAR

    def check_level(self, level: float) -> None:
        _at_least(level, 0.0, "the eigenvalue decay exponent must be >= 0")

    def inputs(self, xs: Tensor, level: float, rng: torch.Generator) -> Tensor:
        d = xs.shape[-1]
        eig = (torch.arange(d, dtype=torch.float64) + 1) ** -level
        return xs @ covariance_transform(eig, rng).to(xs.dtype)


@OOD.register("half_subspace")
class HalfSubspace(Transform):
    """Inputs on a random subspace of dimension ``max(1, floor(c d))`` (paper: ``c = 0.5``)."""

    identity_level = 1.0

    requires = DENSE_LINEAR

    def check_level(self, level: float) -> None:
        if not 0.0 < level <= 1.0:
            raise ValueError(f"level {level} out of range: the subspace's share of d is in (0, 1]")

    def inputs(self, xs: Tensor, level: float, rng: torch.Generator) -> Tensor:
        d = xs.shape[-1]
        eig = torch.zeros(d, dtype=torch.float64)
        eig[: max(1, math.floor(level * d))] = 1.0
        return xs @ covariance_transform(eig, rng).to(xs.dtype)


class _ShareOfPrompts(Transform):
    """A setting whose level is the share of examples it changes, in [0, 1], on dense linear
    regression (the paper's random quadrants and orthogonal queries)."""

    requires = DENSE_LINEAR

    def check_level(self, level: float) -> None:
        if not 0.0 <= level <= 1.0:
            raise ValueError(f"level {level} out of range: must lie in [0, 1]")


@OOD.register("random_quadrants")
class RandomQuadrants(_ShareOfPrompts):
    """Examples in one random orthant per prompt, queries ``N(0, I)`` (paper: ``c = 1``)."""

    def apply(
        self, task: Task, params: FunctionParams, xs: Tensor, level: float, rng: torch.Generator
    ) -> LevelPrompts:
        P, _, d = xs.shape
        signs = torch.randint(0, 2, (P, 1, d), generator=rng).to(xs.dtype) * 2 - 1
        moved = torch.rand(xs.shape, generator=rng) < level
        examples = torch.where(moved, xs.abs() * signs, xs)
        return LevelPrompts(examples, task.evaluate(params, examples), xs,
                            task.evaluate(params, xs))


@OOD.register("orthogonal_query")
class OrthogonalQuery(_ShareOfPrompts):
    """Query at ``i`` orthogonal to the ``i`` earlier examples, same norm (paper: ``c = 1``)."""

    def apply(
        self, task: Task, params: FunctionParams, xs: Tensor, level: float, rng: torch.Generator
    ) -> LevelPrompts:
        x64 = xs.double()
        P, n, d = xs.shape
        queries = x64.clone()
        for i in range(1, min(n, d)):  # from i = d on the examples span R^d: query stays x_i
            q = torch.linalg.qr(x64[:, :i].transpose(1, 2)).Q  # (P, d, i): basis of the span
            x = x64[:, i]
            resid = x - level * (q @ (q.transpose(1, 2) @ x[..., None]))[..., 0]
            queries[:, i] = resid * (x.norm(dim=-1) / resid.norm(dim=-1))[:, None]
        queries = queries.to(xs.dtype)
        return LevelPrompts(xs, task.evaluate(params, xs), queries, task.evaluate(params, queries))


@OOD.register("noisy")
class Noisy(Transform):
    """Label noise of std ``c`` before renormalising Var(y) to its in-distribution value."""

    requires = DENSE_LINEAR
    changes_labels = True

    def check_level(self, level: float) -> None:
        _at_least(level, 0.0, "a noise std must be >= 0")

    def labels(self, task: Task, ys: Tensor, level: float, rng: torch.Generator) -> Tensor:
        var = task.normaliser
        noise = torch.randn(ys.shape, generator=rng, dtype=ys.dtype)
        return (ys + level * noise) * math.sqrt(var / (var + level**2))
