"""Resumable training checkpoints: model, optimiser, RNG states and step, in one safetensors file.

A checkpoint is written atomically (temporary file, then rename) every ``checkpoint_every`` steps
to a local path, or to a URL under the workflow's remote storage (the same bytes through fsspec,
temporary object then move: :mod:`iclbench.storage`), and carries a fingerprint of the job's
configuration; resuming from it continues the exact same computation, so on CPU the final weights
are bitwise identical to an uninterrupted run. No pickle: tensors go into safetensors, everything
else into one JSON metadata entry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save, save_file

from iclbench.metadata import KEY, read_metadata
from iclbench.results import write_with
from iclbench.storage import is_url, read_bytes, write_bytes_atomic

FORMAT = "iclbench-checkpoint-1"


def fingerprint(obj: Any) -> str:
    """A stable hash of a JSON-serialisable job configuration."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TrainState:
    step: int  # steps completed
    model: dict[str, torch.Tensor]
    optimiser: dict[str, Any]  # torch.optim state_dict
    data_rng: torch.Tensor  # torch.Generator.get_state()
    torch_rng: torch.Tensor  # torch.get_rng_state()
    log_rows: list[dict[str, Any]]


def save_checkpoint(path: str | Path, state: TrainState, config_fingerprint: str) -> None:
    tensors: dict[str, torch.Tensor] = {
        f"model.{k}": v.detach().cpu().contiguous() for k, v in state.model.items()
    }
    opt_state = state.optimiser["state"]
    for idx, entry in opt_state.items():
        for name, value in entry.items():
            tensors[f"optim.{idx}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tensors["rng.data"] = state.data_rng.contiguous()
    tensors["rng.torch"] = state.torch_rng.contiguous()
    meta = {
        "format": FORMAT,
        "fingerprint": config_fingerprint,
        "step": state.step,
        "param_groups": state.optimiser["param_groups"],
        "log_rows": state.log_rows,
    }
    metadata = {KEY: json.dumps(meta)}
    if is_url(path):
        write_bytes_atomic(str(path), save(tensors, metadata=metadata))
    else:
        write_with(lambda tmp: save_file(tensors, str(tmp), metadata=metadata), path)


def _metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file's bytes (8-byte header length, then the JSON
    header); ``safetensors.torch.load`` reads the tensors of the same bytes."""
    if len(data) < 8:
        raise ValueError("shorter than a safetensors header")
    n = int.from_bytes(data[:8], "little")
    if len(data) < 8 + n:
        raise ValueError("truncated safetensors header")
    header = json.loads(data[8:8 + n])
    if not isinstance(header, dict):
        raise ValueError("safetensors header is not a JSON object")
    return header.get("__metadata__") or {}


def load_checkpoint(
    path: str | Path, config_fingerprint: str, device: torch.device | str = "cpu"
) -> TrainState:
    """Read a checkpoint (a local path or a URL); raises ``ValueError`` naming the file if it is
    corrupt or belongs to a different configuration."""
    try:
        data = read_bytes(path)
        meta = read_metadata(_metadata(data), ValueError)
        tensors = load(data)
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path}: corrupt or truncated checkpoint ({err}); delete it to restart "
                         "training from scratch") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not an iclbench checkpoint")
    if meta["fingerprint"] != config_fingerprint:
        raise ValueError(
            f"{path}: checkpoint was written for a different configuration (fingerprint "
            f"{meta['fingerprint']}, this job {config_fingerprint}); delete it to restart training, "
            "or restore the configuration it was written with"
        )
    model = {k[len("model."):]: v.to(device) for k, v in tensors.items() if k.startswith("model.")}
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            opt_state.setdefault(int(idx), {})[name] = value.to(device)
    return TrainState(
        step=int(meta["step"]),
        model=model,
        optimiser={"state": opt_state, "param_groups": meta["param_groups"]},
        data_rng=tensors["rng.data"],
        torch_rng=tensors["rng.torch"],
        log_rows=list(meta["log_rows"]),
    )


def describe(params: Mapping[str, Any]) -> str:
    """A short human description of a training job's key settings, for error messages."""
    train = params.get("train", {})
    return ", ".join(f"{k}={train[k]}" for k in ("steps", "batch_size", "lr") if k in train)
