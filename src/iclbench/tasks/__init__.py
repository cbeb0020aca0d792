"""Function classes for in-context learning; importing this package registers every task."""

# imported for their side effect: each module registers its tasks
from iclbench.tasks import forest, linear, mujoco_dynamics, relu_nn, tree  # noqa: F401
from iclbench.tasks.base import (
    TASKS,
    FunctionParams,
    Task,
    build_task,
    sample_inputs,
    sample_prompts,
)

__all__ = ["TASKS", "FunctionParams", "Task", "build_task", "sample_inputs", "sample_prompts"]
