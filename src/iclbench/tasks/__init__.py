"""Function classes for in-context learning; importing this package registers every task."""

from iclbench.tasks import forest, linear, mujoco_dynamics, relu_nn, tree  # noqa: F401  (registration side effects)
from iclbench.tasks.base import (
    TASKS,
    FunctionParams,
    Task,
    build_task,
    sample_inputs,
    sample_prompts,
)

__all__ = ["TASKS", "FunctionParams", "Task", "build_task", "sample_inputs", "sample_prompts"]
