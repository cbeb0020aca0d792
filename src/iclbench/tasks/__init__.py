"""Function classes for in-context learning; importing this package registers every task."""

import importlib
import pkgutil

from iclbench.tasks.base import (
    TASKS,
    FunctionParams,
    Task,
    build_task,
    sample_inputs,
    sample_prompts,
)


def _import_modules() -> None:
    """Import every public module of the package (alphabetically): importing one registers its
    tasks, so adding one is the module plus its config entry."""
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_") and module.name != "base":
            importlib.import_module(f"{__name__}.{module.name}")


_import_modules()

__all__ = ["TASKS", "FunctionParams", "Task", "build_task", "sample_inputs", "sample_prompts"]
