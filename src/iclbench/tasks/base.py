"""The function-class interface shared by every task (Garg et al. 2022, section 2).

A task separates *functions* from *inputs*: ``sample_functions`` draws one function per prompt (its
parameters as a dict of tensors, so they can be stored with safetensors) and ``evaluate`` applies
them to inputs. Input sampling lives in :func:`sample_inputs`, so an out-of-distribution transform
can change the inputs without touching the function.

Most tasks have scalar outputs: ``evaluate`` returns ``ys`` (B, n). A task with ``vector_output``
returns (B, n, m) with ``m = out_dims`` (a MuJoCo system's next state); its normaliser is then the
in-distribution Var of each output coordinate, so the error (the mean over output dimensions of the
squared error, divided by it) scores 1 for "always predict 0" as for every task.

A task declares ``tags``, the properties of its function class that baselines and OOD settings
match on (their ``requires``; :func:`has_tags`) rather than on task names, and its options the
registries' one way (``options`` and ``ranges``: :func:`iclbench.registry.resolve_options`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from iclbench.registry import Configurable, Registry

FunctionParams = dict[str, Tensor]


#: the tag of tasks whose ``evaluate`` returns vectors (B, n, out_dims) rather than scalars (B, n)
VECTOR_OUTPUT = "vector_output"


class Task(ABC, Configurable):
    """A function class over ``n_dims``-dimensional inputs with scalar (or vector) outputs.

    ``options`` (name -> default; the config's ``tasks.<name>.options`` may set only these) and
    ``ranges`` are checked when a task is built; ``tags`` name what the function class is
    (``linear``, ``tree``, ...), for the baselines and OOD settings that apply to it."""

    #: properties of the function class that baselines and OOD settings require (their
    #: ``requires``); :data:`VECTOR_OUTPUT` for vector labels
    tags: ClassVar[frozenset[str]] = frozenset()
    #: True if ``evaluate`` returns vectors (B, n, out_dims) rather than scalars (B, n): set from
    #: the :data:`VECTOR_OUTPUT` tag (declare the tag, not this)
    vector_output: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        tagged = VECTOR_OUTPUT in cls.tags
        if cls.__dict__.get("vector_output", tagged) != tagged:
            raise TypeError(f"{cls.__qualname__}: vector_output comes from the "
                            f"{VECTOR_OUTPUT!r} tag; declare that in tags")
        cls.vector_output = tagged

    def __init__(self, n_dims: int, **options: Any) -> None:
        self.n_dims = n_dims
        self.opts: dict[str, Any] = self.check_options(options)

    @abstractmethod
    def sample_functions(
        self, batch_size: int, active_dims: int, generator: torch.Generator
    ) -> FunctionParams:
        """Draw ``batch_size`` functions that depend only on the first ``active_dims`` inputs."""

    @abstractmethod
    def evaluate(self, params: FunctionParams, xs: Tensor) -> Tensor:
        """Apply the functions to inputs ``xs`` (B, n, d); returns ``ys`` (B, n) or, for a
        ``vector_output`` task, (B, n, out_dims)."""

    def function_numel(self) -> int:
        """Elements of one prompt's function parameters, what ``sample_functions`` holds per prompt
        (the memory bound of :mod:`iclbench.budget`, checked when the DAG is built).

        The default samples one function and counts; a task whose functions grow with an option
        (a tree's depth, a network's width) computes it instead, so that a huge value is caught
        without allocating it.
        """
        params = self.sample_functions(1, self.n_dims, torch.Generator().manual_seed(0))
        return sum(t.numel() for t in params.values())

    def workspace_numel(self, n_points: int) -> int:
        """Elements ``evaluate`` holds per prompt of ``n_points`` points beyond inputs and labels
        (a network's hidden activations); the default, none."""
        return 0

    @property
    def out_dims(self) -> int:
        """Output dimensions: 1 for scalar tasks; vector tasks override it."""
        return 1

    @property
    @abstractmethod
    def normaliser(self) -> float:
        """Var(y) in distribution: the squared error of always predicting 0 (SPEC section 1)."""


TASKS: Registry[type[Task]] = Registry("task")


def build_task(name: str, n_dims: int, options: Mapping[str, Any] | None = None) -> Task:
    return TASKS.get(name)(n_dims, **dict(options or {}))


def has_tags(task: str, tags: frozenset[str]) -> bool:
    """Whether task ``task`` carries every one of ``tags`` (a name not registered carries none):
    the test of a baseline's or OOD setting's ``requires``."""
    return tags <= (TASKS.get(task).tags if task in TASKS else frozenset())


def sample_inputs(
    batch_size: int, n_points: int, n_dims: int, active_dims: int, generator: torch.Generator
) -> Tensor:
    """Inputs ``x ~ N(0, I_d)`` with coordinates ``>= active_dims`` zeroed (curriculum); (B, n, d)."""
    xs = torch.randn(batch_size, n_points, n_dims, generator=generator)
    if active_dims < n_dims:
        xs[..., active_dims:] = 0.0
    return xs


def sample_prompts(
    task: Task,
    batch_size: int,
    n_points: int,
    generator: torch.Generator,
    active_dims: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Fresh prompts ``(xs, ys)`` of shapes (B, n, d) and (B, n) (or (B, n, m): vector tasks)
    from one generator."""
    active = task.n_dims if active_dims is None else active_dims
    params = task.sample_functions(batch_size, active, generator)
    xs = sample_inputs(batch_size, n_points, task.n_dims, active, generator)
    return xs, task.evaluate(params, xs)
