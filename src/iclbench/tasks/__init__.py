"""Function classes for in-context learning; importing this package registers every task."""

from iclbench.tasks.base import (
    TASKS,
    FunctionParams,
    Task,
    build_task,
    sample_inputs,
    sample_prompts,
)
from iclbench.registry import import_modules


import_modules(__name__, __path__, skip=("base",))  # importing each registers its entries

__all__ = ["TASKS", "FunctionParams", "Task", "build_task", "sample_inputs", "sample_prompts"]
