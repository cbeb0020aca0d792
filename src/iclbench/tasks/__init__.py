"""Function classes for in-context learning; importing this package registers every task."""

from iclbench.registry import import_modules
from iclbench.tasks.base import (
    TASKS,
    VECTOR_OUTPUT,
    FunctionParams,
    Task,
    build_task,
    has_tags,
    sample_inputs,
    sample_prompts,
)

import_modules(__name__, __path__, skip=("base",))  # importing each registers its entries

__all__ = ["TASKS", "VECTOR_OUTPUT", "FunctionParams", "Task", "build_task", "has_tags",
           "sample_inputs", "sample_prompts"]
