"""Training snapshots: one safetensors file per snapshot, no pickle anywhere.

A snapshot file ``snapshot-<iteration, 9 digits>.safetensors`` holds every tensor of the training state
under a prefix (``G.``, ``G_ema.``, ``D.``, ``opt_g.``, ``opt_d.``, plus ``rng`` and ``pl_mean``) and, in the
safetensors ``__metadata__``, a JSON document with the scalar state (iteration, image count, ADA
controller, configurations). The Adam states are flattened to tensors (``opt_g.<param index>.<key>``, e.g.
``opt_g.3.exp_avg``); their hyperparameters are not stored, they follow from the training config. Loading
therefore never unpickles anything: a snapshot from an untrusted place can at worst hold wrong numbers.

Files are written with ``write_bytes_atomic`` (temp file beside it, fsync, rename), so after a kill -9 a
directory holds complete snapshots plus at most a ``.snapshot-*.tmp`` leftover, which
``latest_snapshot`` does not match.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from embedding.fileio import write_bytes_atomic
from embedding.stylegan2.store import StoreError, dumps_safetensors, loads_safetensors

SNAPSHOT_FORMAT = "facesurv-stylegan2-training"
SNAPSHOT_VERSION = "1"
_NAME = re.compile(r"^snapshot-(\d{9})\.safetensors$")


def snapshot_name(iteration: int) -> str:
    return f"snapshot-{iteration:09d}.safetensors"


def latest_snapshot(snapshot_dir: str | os.PathLike) -> Path | None:
    """The complete snapshot of the highest iteration in the folder, or None. Temp files are skipped."""
    d = Path(snapshot_dir)
    if not d.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name)) and p.is_file()]
    return max(found)[1] if found else None


def flatten_state(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.detach() for k, v in state.items()}


def unflatten_state(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    start = prefix + "."
    return {k[len(start):]: v for k, v in tensors.items() if k.startswith(start)}


def flatten_optimizer(prefix: str, opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Adam's per-parameter state -> {prefix.<index>.<key>: tensor}; non-tensor entries become 0-d tensors."""
    out: dict[str, torch.Tensor] = {}
    for index, entry in opt.state_dict()["state"].items():
        for key, value in entry.items():
            t = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            out[f"{prefix}.{index}.{key}"] = t.detach()
    return out


def load_optimizer(prefix: str, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], *, where: str) -> None:
    """Inverse of `flatten_optimizer` into an optimiser built with the same parameters and hyperparameters."""
    fresh = opt.state_dict()
    n_params = sum(len(g["params"]) for g in fresh["param_groups"])
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, t in unflatten_state(prefix, tensors).items():
        index, _, key = name.partition(".")
        if not index.isdigit() or not key or int(index) >= n_params:
            raise StoreError(f"{where}: optimizer entry {prefix}.{name} does not fit an optimizer of {n_params} "
                             f"parameters (a snapshot of another architecture?)")
        state.setdefault(int(index), {})[key] = t
    try:
        opt.load_state_dict({"state": state, "param_groups": fresh["param_groups"]})
    except (ValueError, RuntimeError, KeyError) as exc:
        raise StoreError(f"{where}: optimizer state {prefix} does not fit: {exc}") from None


def write_snapshot(snapshot_dir: str | os.PathLike, iteration: int, tensors: dict[str, torch.Tensor],
                   state: dict[str, Any]) -> Path:
    """Write snapshot_dir/snapshot-<iteration>.safetensors atomically; returns its path."""
    meta = {"format": SNAPSHOT_FORMAT, "format_version": SNAPSHOT_VERSION,
            "state": json.dumps(state, sort_keys=True, allow_nan=False)}
    path = Path(snapshot_dir) / snapshot_name(iteration)
    write_bytes_atomic(path, dumps_safetensors(tensors, meta))
    return path


def read_snapshot(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A snapshot file -> (tensors on CPU, the scalar state). StoreError when it is not one."""
    where = str(path)
    tensors, meta = loads_safetensors(Path(path).read_bytes(), where=where)
    if meta.get("format") != SNAPSHOT_FORMAT:
        raise StoreError(f"{where}: not a facesurv training snapshot (format {meta.get('format')!r})")
    if meta.get("format_version") != SNAPSHOT_VERSION:
        raise StoreError(f"{where}: snapshot version {meta.get('format_version')!r} is not supported "
                         f"(this build reads version {SNAPSHOT_VERSION})")
    try:
        state = json.loads(meta["state"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise StoreError(f"{where}: the snapshot's scalar state is missing or not JSON ({exc})") from None
    if not isinstance(state, dict):
        raise StoreError(f"{where}: the snapshot's scalar state must be a JSON object")
    return tensors, state
