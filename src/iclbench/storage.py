"""Where a training checkpoint lives, and its byte I/O when that is a bucket (no torch here: the
Snakefile imports this module while the DAG is parsed).

A local run keeps its checkpoints under ``results/checkpoints/``. A run with a remote default
storage provider (``--default-storage-provider gcs --default-storage-prefix gs://BUCKET/iclbench``,
as in ``profiles/gcp`` and ``profiles/gke``) keeps them under that prefix, beside its results
(``gs://BUCKET/iclbench/results/checkpoints/...``): the checkpoint is not a declared output, so
Snakemake would otherwise leave it on the job's VM, lost with it when the VM is preempted. Snakemake
passes both settings to every job it spawns (``spawned_job_args_factory``), and the job re-parses
the Snakefile with them, so a job, its retries and the main process compute the same location.

A location with a ``scheme://`` (``gs://``, ``s3://``, ``file://``, ...) is read and written
through fsspec (``gcsfs`` for ``gs://``: the ``cloud`` extra); any other location is a plain local
path, handled with :mod:`pathlib` and ``os.replace`` exactly as before (no URL parsing).
"""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path
from typing import Any

#: where checkpoints live, relative to a config's results tree (``results/checkpoints``)
CHECKPOINTS = "checkpoints"
#: the default config's results tree; another config's is a folder under it
DEFAULT_RESULTS = "results"
#: the temporary object a remote checkpoint is written to before it replaces the checkpoint
TMP_SUFFIX = ".tmp"

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+://")


def logs_dir(results: str) -> str:
    """The job logs of the results tree ``results``: ``logs`` for the default ``results``,
    ``logs/<name>`` for ``results/<name>``."""
    name = posixpath.relpath(posixpath.normpath(results), DEFAULT_RESULTS)
    return "logs" if name == "." else posixpath.join("logs", name)


def checkpoint_location(relative: str, default_storage_provider: str | None,
                        default_storage_prefix: str | None) -> str:
    """``relative`` (``results/checkpoints/...``) without a default storage provider; with one,
    the same path under its prefix, joined as Snakemake joins the prefix to a rule's outputs."""
    if not default_storage_provider or not default_storage_prefix:
        return relative
    return f"{default_storage_prefix.rstrip('/')}/{posixpath.normpath(relative)}"


def is_url(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` is a URL (``scheme://...``) rather than a local path."""
    return isinstance(location, str) and _URL.match(location) is not None


def as_location(location: str | os.PathLike[str]) -> Path | str:
    """A URL as it is, anything else as a :class:`Path`."""
    return location if is_url(location) else Path(location)  # type: ignore[return-value]


def _fs(url: str) -> tuple[Any, str]:
    import fsspec  # only for URLs: a local run never needs it

    return fsspec.core.url_to_fs(url)


def exists(location: str | os.PathLike[str]) -> bool:
    if not is_url(location):
        return Path(location).exists()
    fs, path = _fs(str(location))
    return bool(fs.exists(path))


def read_bytes(location: str | os.PathLike[str]) -> bytes:
    if not is_url(location):
        return Path(location).read_bytes()
    fs, path = _fs(str(location))
    return bytes(fs.cat_file(path))


def write_bytes_atomic(url: str, data: bytes) -> None:
    """Write ``data`` to the object ``url`` so that it holds either its previous content or all of
    ``data``, never part of it: the bytes go to ``url + ".tmp"``, which is then moved onto ``url``.

    On an object store (GCS, S3) an object becomes visible only once its upload has completed, and
    the move is a server-side copy onto ``url`` (which replaces the object in one step: readers see
    the old or the new checkpoint) followed by deleting the temporary object; a job killed between
    the two leaves the complete old checkpoint and a stray ``.tmp`` object, which the next save
    overwrites and :func:`remove` deletes. On a local ``file://`` filesystem the move is a rename.
    """
    fs, path = _fs(url)
    tmp = path + TMP_SUFFIX
    try:
        fs.pipe_file(tmp, data)
    except FileNotFoundError:  # a local directory not made yet (object stores have none)
        fs.makedirs(posixpath.dirname(tmp), exist_ok=True)
        fs.pipe_file(tmp, data)
    fs.mv(tmp, path)


def remove(location: str | os.PathLike[str]) -> None:
    """Delete a checkpoint (and a remote one's temporary object) if present."""
    if not is_url(location):
        Path(location).unlink(missing_ok=True)
        return
    fs, path = _fs(str(location))
    for p in (path, path + TMP_SUFFIX):
        try:
            fs.rm_file(p)
        except FileNotFoundError:
            pass
