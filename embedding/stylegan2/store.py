"""The project's generator format: a safetensors file plus config.json, read and written without the
safetensors package (embedding/ depends on torch, numpy and Pillow only).

safetensors layout: 8-byte little-endian header length N, N bytes of JSON
{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}, then the raw
little-endian tensor bytes. Our writer is deterministic (names sorted, compact JSON, header padded with
spaces to a multiple of 8), so equal weights and config give an equal file and an equal sha256.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from embedding.fileio import sha256_file, write_bytes_atomic  # noqa: F401 - part of this module's API

T = TypeVar("T")

WEIGHTS_FILE = "generator.safetensors"
CONFIG_FILE = "config.json"
FORMAT_NAME = "facesurv-stylegan2"
FORMAT_VERSION = "1"
_MAX_HEADER = 100 * 1024 * 1024
_MAX_DIMS = 8

_DTYPES: dict[str, tuple[torch.dtype, str]] = {
    "F64": (torch.float64, "<f8"), "F32": (torch.float32, "<f4"), "F16": (torch.float16, "<f2"),
    "BF16": (torch.bfloat16, "<u2"), "I64": (torch.int64, "<i8"), "I32": (torch.int32, "<i4"),
    "I16": (torch.int16, "<i2"), "I8": (torch.int8, "i1"), "U8": (torch.uint8, "u1"), "BOOL": (torch.bool, "?"),
}
_BY_TORCH = {t: name for name, (t, _) in _DTYPES.items()}


class StoreError(ValueError):
    """A file that is not a valid safetensors file of the expected content; the message says why."""


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().to("cpu").contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    arr = t.numpy()
    if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and sys.byteorder == "big"):
        arr = arr.byteswap().view(arr.dtype.newbyteorder("<"))
    return arr.tobytes()


def dumps_safetensors(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """Serialise named tensors (any device; copied to CPU) to safetensors bytes, deterministically."""
    header: dict[str, object] = {}
    if metadata:
        bad = [k for k, v in metadata.items() if not (isinstance(k, str) and isinstance(v, str))]
        if bad:
            raise ValueError(f"safetensors metadata must map str to str; bad keys: {bad}")
        header["__metadata__"] = dict(sorted(metadata.items()))
    chunks: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name]
        if name == "__metadata__":
            raise ValueError("'__metadata__' is reserved and cannot name a tensor")
        if t.dtype not in _BY_TORCH:
            raise ValueError(f"tensor {name!r}: dtype {t.dtype} not supported")
        data = _tensor_bytes(t)
        header[name] = {"dtype": _BY_TORCH[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    hjson = json.dumps(header, separators=(",", ":"), sort_keys=False).encode("utf-8")
    hjson += b" " * (-len(hjson) % 8)
    return struct.pack("<Q", len(hjson)) + hjson + b"".join(chunks)


def loads_safetensors(blob: bytes, *, where: str = "safetensors data") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Parse safetensors bytes -> (tensors on CPU, metadata). Every offset and size is checked."""
    if len(blob) < 8:
        raise StoreError(f"{where}: too short to be a safetensors file ({len(blob)} bytes)")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > _MAX_HEADER or 8 + n > len(blob):
        raise StoreError(f"{where}: header length {n} does not fit a {len(blob)}-byte file (truncated or not safetensors)")
    try:
        header = json.loads(blob[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(f"{where}: header is not valid JSON ({exc})") from None
    except RecursionError:  # a header of a few thousand nested brackets
        raise StoreError(f"{where}: header JSON is nested too deeply to be a safetensors header") from None
    if not isinstance(header, dict):
        raise StoreError(f"{where}: header must be a JSON object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise StoreError(f"{where}: __metadata__ must map strings to strings")
    data = memoryview(blob)[8 + n:]
    spans = []
    out: dict[str, torch.Tensor] = {}
    for name, info in header.items():
        try:
            dtype, np_dtype = _DTYPES[info["dtype"]]
            shape = [int(s) for s in info["shape"]]
            begin, end = (int(v) for v in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise StoreError(f"{where}: tensor {name!r} has a malformed entry {str(info)[:200]}") from None
        if len(shape) > _MAX_DIMS:
            raise StoreError(f"{where}: tensor {name!r} has {len(shape)} dimensions (at most {_MAX_DIMS})")
        # Python integers: a numpy int64 product wraps, and a wrapped count of 0 would pass the size check
        count = math.prod(shape)
        itemsize = np.dtype(np_dtype).itemsize
        if min(shape, default=0) < 0 or not 0 <= begin <= end <= len(data) or end - begin != count * itemsize:
            raise StoreError(f"{where}: tensor {name!r} has offsets {begin}..{end} inconsistent with shape "
                             f"{shape} {info['dtype']} in {len(data)} data bytes (truncated?)")
        spans.append((begin, end, name))
        arr = np.frombuffer(data[begin:end], dtype=np_dtype).astype(np.dtype(np_dtype).newbyteorder("="))
        t = torch.from_numpy(arr.copy())
        if dtype == torch.bfloat16:
            t = t.view(torch.int16).view(torch.bfloat16)
        out[name] = t.to(dtype).reshape(shape)
    spans.sort()
    for (_, e0, a), (b1, _, b) in zip(spans, spans[1:], strict=False):
        if b1 < e0:
            raise StoreError(f"{where}: tensors {a!r} and {b!r} overlap")
    return out, dict(meta)


def sha256_bytes(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def generator_to_bytes(G) -> bytes:
    """The project-format safetensors bytes of a Generator: its state dict (float32) + its config.

    The source path is deliberately not part of it: the same weights and architecture hash the same
    wherever they came from.
    """
    state = {k: v.detach().to("cpu", torch.float32) for k, v in G.state_dict().items()}
    meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
            "config": json.dumps(G.config.to_dict(), sort_keys=True)}
    if getattr(G, "random_init_seed", None) is not None:
        meta["random_init_seed"] = str(int(G.random_init_seed))
    return dumps_safetensors(state, meta)


def generator_from_bytes(blob: bytes, *, where: str):
    """Inverse of `generator_to_bytes` -> Generator (CPU, eval mode, no grad)."""
    from embedding.stylegan2.generator import Generator, GeneratorConfig

    tensors, meta = loads_safetensors(blob, where=where)
    if meta.get("format") != FORMAT_NAME:
        raise StoreError(f"{where}: not a facesurv generator file (format {meta.get('format')!r}); "
                         f"convert checkpoints with `facesurv generator import`")
    if meta.get("format_version") != FORMAT_VERSION:
        raise StoreError(f"{where}: format version {meta.get('format_version')!r} is not supported "
                         f"(this build reads version {FORMAT_VERSION})")
    try:
        config = GeneratorConfig.from_dict(json.loads(meta["config"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise StoreError(f"{where}: invalid generator config in the file: {exc}") from None
    G = build_from_file(lambda: Generator(config, seed=None), what="generator", where=where)
    load_state_strict(G, tensors, where=where)
    if "random_init_seed" in meta:
        try:
            G.random_init_seed = int(meta["random_init_seed"])
        except ValueError:
            raise StoreError(f"{where}: invalid random_init_seed {meta['random_init_seed']!r}") from None
    return G.eval().requires_grad_(False)


def build_from_file(build: Callable[[], T], *, what: str, where: str) -> T:
    """build() a module from a config read out of a file: whatever it raises (a crafted config may
    ask for absurd sizes) becomes one StoreError naming the file."""
    try:
        return build()
    except (RuntimeError, ValueError, TypeError, OverflowError, MemoryError) as exc:
        raise StoreError(f"{where}: the {what} config in the file cannot be built "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None


def load_state_strict(G, tensors: dict[str, torch.Tensor], *, where: str) -> None:
    """Copy `tensors` into G; every name and shape must match exactly (names listed when not)."""
    expected = G.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        raise StoreError(f"{where}: weights do not fit the configured architecture: {'; '.join(parts)}")
    for k, v in expected.items():
        if tuple(tensors[k].shape) != tuple(v.shape):
            raise StoreError(f"{where}: tensor {k} has shape {tuple(tensors[k].shape)}, the architecture "
                             f"needs {tuple(v.shape)}")
    G.load_state_dict({k: t.to(torch.float32) for k, t in tensors.items()}, strict=True)


def save_generator(G, out_dir: str | os.PathLike, *, source: str | None = None,
                   description: str | None = None) -> str:
    """Write OUT_DIR/generator.safetensors and OUT_DIR/config.json; returns the sha256 of the weights file.

    Each file is replaced atomically; config.json (for people and tools) repeats the config and the sha256.
    """
    out = Path(out_dir)
    blob = generator_to_bytes(G)
    sha = sha256_bytes(blob)
    write_bytes_atomic(out / WEIGHTS_FILE, blob)
    doc = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "weights_file": WEIGHTS_FILE,
           "sha256": sha, "config": G.config.to_dict(), "num_ws": G.num_ws,
           "random_init_seed": getattr(G, "random_init_seed", None)}
    if source is not None:
        doc["source"] = source
    if description is not None:
        doc["description"] = description
    write_bytes_atomic(out / CONFIG_FILE, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())
    return sha


def read_generator_file(path: str | os.PathLike):
    """A project-format directory or .safetensors file -> (Generator, sha256 of the weights file)."""
    p = Path(path)
    f = p / WEIGHTS_FILE if p.is_dir() else p
    if not f.is_file():
        raise StoreError(f"{p}: no {WEIGHTS_FILE} here; create it with `facesurv generator import CHECKPOINT --out DIR`")
    blob = f.read_bytes()
    return generator_from_bytes(blob, where=str(f)), sha256_bytes(blob)
