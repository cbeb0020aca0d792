"""The one JSON object that every safetensors file of the project keeps under the metadata key
``iclbench`` (prompt, model and checkpoint files), read with errors that say what is wrong."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

KEY = "iclbench"


def read_metadata(metadata: Mapping[str, str] | None,
                  bad: Callable[[str], Exception]) -> dict[str, Any]:
    """The ``iclbench`` object of a file's safetensors metadata; ``bad(what)`` builds the error
    (naming the file) raised when it is missing, not JSON or not an object."""
    if not metadata or KEY not in metadata:
        raise bad(f"metadata lacks the {KEY!r} key")
    try:
        info = json.loads(metadata[KEY])
    except ValueError as err:
        raise bad(f"metadata {KEY!r} is not JSON: {err}") from None
    if not isinstance(info, dict):
        raise bad(f"metadata {KEY!r} is a {type(info).__name__}, not an object")
    return info
