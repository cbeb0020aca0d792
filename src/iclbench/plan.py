"""What building the DAG needs from the registries, checked once per config and code.

``common.smk`` runs on every ``snakemake`` call, and on a cloud executor once more per job. The full
check of a config (:func:`iclbench.config.check`) builds every registry entry and so imports torch,
which alone takes seconds; the DAG itself needs only a few facts from the registries (which
baselines and OOD settings apply to which task, which tables a figure reads, its caption).

:func:`checked_plan` runs the check and gathers those facts into a :class:`Plan`, and stores the
plan under ``.snakemake/iclbench/`` keyed by a hash of the config, the rules' memory limits and the
package's source. The next call with the same three reads it back without importing torch. Only
configs that passed are stored, so a bad config is checked (and rejected) every time.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: where the plans of checked configs are kept, relative to the working directory
CACHE_DIR = Path(".snakemake") / "iclbench"


@dataclass(frozen=True)
class Plan:
    """The registry facts the DAG needs, for the config they were gathered from."""

    #: task -> the baselines of ``baselines:`` that apply to it
    baselines: Mapping[str, list[str]]
    #: task -> the OOD settings evaluated on it: the in-distribution one first, then those of
    #: ``ood:`` that apply to it
    oods: Mapping[str, list[str]]
    #: figure -> the summary tables it reads
    figure_tables: Mapping[str, list[str]]
    #: figure -> its caption in the report
    figure_captions: Mapping[str, str]


def gather(raw: Mapping[str, Any]) -> Plan:
    """The plan of a checked config (imports the registries, hence torch), its lists in the
    order of the sorted config that the rules read (:func:`~iclbench.config.canonical`)."""
    from iclbench.baselines import BASELINES
    from iclbench.config import canonical
    from iclbench.figures import FIGURES
    from iclbench.ood import IN_DISTRIBUTION, OOD

    raw = canonical(raw)
    tasks = list(raw["tasks"])
    return Plan(
        baselines={t: [b for b in raw["baselines"] if BASELINES.get(b).applies_to(t)]
                   for t in tasks},
        oods={t: [o for o in [IN_DISTRIBUTION, *raw["ood"]] if OOD.get(o).applies_to(t)]
              for t in tasks},
        figure_tables={f: list(FIGURES.get(f).tables) for f in raw["figures"]},
        figure_captions={f: FIGURES.get(f).caption for f in raw["figures"]},
    )


def source_digest(package: Path | None = None) -> str:
    """A hash of the package's Python sources: a changed check or default invalidates plans."""
    root = package or Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def plan_key(raw: Mapping[str, Any], limits: Mapping[str, int], source: str) -> str:
    """The cache key of a config, its rules' ``mem_mb`` and the package's source digest."""
    text = json.dumps({"config": raw, "mem_mb": dict(limits), "source": source},
                      sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def checked_plan(raw: Mapping[str, Any], mem_overrides: Mapping[str, Any] | None = None,
                 cache_dir: Path | None = CACHE_DIR) -> Plan:
    """:func:`~iclbench.config.check` ``raw`` (a schema-valid config) unless this config, with
    these memory limits and this code, passed before; then the registry facts of its DAG.

    Raises :class:`~iclbench.config.ConfigError` naming the key, as ``check`` does. With
    ``cache_dir`` None nothing is read or stored.
    """
    from iclbench.budget import mem_limits

    path = None
    if cache_dir is not None:
        key = plan_key(raw, mem_limits(raw, mem_overrides), source_digest())
        path = Path(cache_dir) / f"plan-{key}.json"
        stored = _read(path)
        if stored is not None:
            return stored
    from iclbench.config import check

    check(raw, mem_overrides)
    plan = gather(raw)
    if path is not None:
        _write(path, plan)
    return plan


def _read(path: Path) -> Plan | None:
    try:
        return Plan(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):  # absent, or not a plan: check again
        return None


def _write(path: Path, plan: Plan) -> None:
    """Atomically: parallel jobs that parse the workflow may store the same plan at once. A
    directory that cannot be written only means the check runs again next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    except OSError:
        return
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(plan), f)
        os.replace(tmp, path)
    except OSError:
        Path(tmp).unlink(missing_ok=True)
