"""Import StyleGAN2 checkpoints without running code stored in them.

A pickle can call any importable function while it loads (``os.system`` included), so NVIDIA's ``.pkl``
files are read with an unpickler that resolves only an allow-list of globals: tensor and storage rebuild
functions, containers, numbers and numpy arrays. The ``torch_utils.persistence`` objects NVIDIA pickles
(each carrying its class's source code, which NVIDIA's loader would ``exec``) become inert placeholders
that only hold their state: the init kwargs that define the architecture and the parameter/buffer dicts.
Any other global is refused, by name, before it is called. rosinality ``.pt`` files go through
``torch.load(weights_only=True)``. Besides the generator, the discriminator saved with it (NVIDIA's ``D``,
a rosinality training snapshot's ``d``) can be imported for fine-tuning (``load_discriminator``).
"""

from __future__ import annotations

import argparse
import collections
import io
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embedding.stylegan2.discriminator import Discriminator, DiscriminatorConfig
from embedding.stylegan2.generator import Generator, GeneratorConfig
from embedding.stylegan2.layers import make_fir_filter
from embedding.stylegan2.store import StoreError, load_state_strict


class CheckpointError(ValueError):
    """A checkpoint that cannot be imported; the message names the file and the reason."""


class UnsafeCheckpointError(CheckpointError):
    """The file references a global outside the allow-list; nothing from it was executed."""


# ---------------------------------------------------------------------------------------------
# Restricted unpickling
# ---------------------------------------------------------------------------------------------

class PersistentPlaceholder:
    """Stands in for a pickled NVIDIA network object: keeps its class name and state, runs nothing."""

    def __init__(self, class_name: str, state: dict[str, Any] | None, module: str = "") -> None:
        self.class_name = class_name
        self.module = module
        self.state = state if isinstance(state, dict) else {}

    def __setstate__(self, state: Any) -> None:  # BUILD opcode for plainly pickled classes
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots)
            state = {**(state[0] or {}), **(state[1] or {})}
        self.state = state if isinstance(state, dict) else {}

    def __repr__(self) -> str:
        return f"<placeholder {self.module}.{self.class_name}>"


def _placeholder_class(module: str, name: str) -> type:
    """A fresh inert class for `module.name`, for networks pickled without NVIDIA's persistence wrapper."""

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        PersistentPlaceholder.__init__(obj, name, {}, module)
        return obj

    return type(name, (PersistentPlaceholder,), {"__new__": __new__, "__module__": __name__})


def _reconstruct_persistent(meta: Any) -> PersistentPlaceholder:
    # NVIDIA's version execs meta["module_src"]; we only keep the data.
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("class_name"), str):
        raise CheckpointError("malformed persistent object in the pickle (expected NVIDIA's torch_utils.persistence layout)")
    return PersistentPlaceholder(meta["class_name"], meta.get("state"))


class _EasyDict(dict):
    """dnnlib.EasyDict holds kwargs such as mapping_kwargs; a plain dict keeps the data."""

    def __setstate__(self, state: Any) -> None:
        pass


def _load_storage_bytes(b: bytes):
    # torch pickles each storage as a nested torch.save blob; read it with torch's own safe loader.
    if not isinstance(b, bytes | bytearray):
        raise CheckpointError("malformed tensor storage in the pickle")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return torch.load(io.BytesIO(b), weights_only=True, map_location="cpu")
        except pickle.UnpicklingError as exc:
            raise UnsafeCheckpointError(f"a tensor storage in the pickle is not plain data: {_torch_refusal(exc)}") from None


def _latin1_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    # Protocol-2 pickles spell bytes as _codecs.encode(str, 'latin1'); no other codec is accepted.
    if encoding not in ("latin1", "latin-1") or not isinstance(obj, str):
        raise UnsafeCheckpointError(f"refusing _codecs.encode with encoding {encoding!r}")
    return obj.encode("latin1", errors)


_TORCH_DTYPES = {"float16", "float32", "float64", "bfloat16", "int8", "int16", "int32", "int64", "uint8", "bool",
                 "half", "float", "double", "long", "int", "short"}
_NP_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    import copyreg

    import torch._utils as tu

    allowed: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor"): tu._rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): tu._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): tu._rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): tu._rebuild_parameter_with_state,
        ("torch._tensor", "_rebuild_from_type_v2"): torch._tensor._rebuild_from_type_v2,
        ("torch", "Tensor"): torch.Tensor,
        ("torch", "Size"): torch.Size,
        ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
        ("torch.storage", "_load_from_bytes"): _load_storage_bytes,
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent,
        ("dnnlib.util", "EasyDict"): _EasyDict,
        ("dnnlib", "EasyDict"): _EasyDict,
        ("copyreg", "_reconstructor"): copyreg._reconstructor,  # type: ignore[attr-defined]  # private; not in typeshed's copyreg stub
        ("_codecs", "encode"): _latin1_encode,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    for name in ("set", "frozenset", "dict", "list", "tuple", "int", "float", "complex", "bool", "str",
                 "bytes", "bytearray", "object"):
        allowed[("builtins", name)] = getattr(__import__("builtins"), name)
        allowed[("__builtin__", name)] = allowed[("builtins", name)]
    for mod in _NP_MODULES:
        allowed[(mod, "_reconstruct")] = _np_reconstruct
        allowed[(mod, "scalar")] = _np_scalar
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(mod, "_frombuffer")] = _np_frombuffer
    for dt in _TORCH_DTYPES:
        allowed[("torch", dt)] = getattr(torch, dt)
    return allowed


def _np_reconstruct(subtype, shape, dtype):
    if subtype is not np.ndarray:
        raise UnsafeCheckpointError("refusing a numpy array subclass")
    return np.ndarray.__new__(np.ndarray, shape, np.dtype(dtype) if not isinstance(dtype, bytes) else dtype)


def _np_frombuffer(buf, dtype, shape, order):
    dtype = np.dtype(dtype)
    if dtype.hasobject or not isinstance(buf, bytes | bytearray | memoryview) or order not in ("C", "F"):
        raise UnsafeCheckpointError("refusing a numpy buffer that is not plain numbers")
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order).copy()


def _np_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise UnsafeCheckpointError("refusing a numpy object scalar")
    return np.frombuffer(data, dtype=dtype, count=1)[0] if data is not None else dtype.type()


# Modules whose classes are NVIDIA network/augmentation classes pickled without the persistence
# wrapper: they become placeholders too (their code is never imported).
_NETWORK_MODULES = re.compile(r"^(training\.(networks|networks_stylegan2|augment)|torch_utils\.persistence)$")


class RestrictedUnpickler(pickle.Unpickler):
    """pickle.Unpickler that resolves only allow-listed globals (see module docstring)."""

    _allowed = None

    def __init__(self, file, *, where: str = "checkpoint") -> None:
        super().__init__(file)
        self.where = where
        if RestrictedUnpickler._allowed is None:
            RestrictedUnpickler._allowed = _allowed_globals()

    def find_class(self, module: str, name: str):
        assert self._allowed is not None  # __init__ filled it
        target = self._allowed.get((module, name))
        if target is not None:
            return target
        if _NETWORK_MODULES.match(module) and name.isidentifier() and not name.startswith("_"):
            return _placeholder_class(module, name)
        raise UnsafeCheckpointError(
            f"{self.where}: refused to load: the pickle references {module}.{name}, which is not a tensor, "
            f"number, container or NVIDIA network state (pickles can run code; nothing was executed)")

    def persistent_load(self, pid):
        raise UnsafeCheckpointError(f"{self.where}: unexpected persistent id in a plain pickle")


def restricted_load(data: bytes, *, where: str = "checkpoint") -> Any:
    """Unpickle `data` with the allow-list; raises CheckpointError (UnsafeCheckpointError when refused)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return RestrictedUnpickler(io.BytesIO(data), where=where).load()
        except CheckpointError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
                KeyError, RuntimeError, MemoryError, UnicodeDecodeError) as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CheckpointError(f"{where}: not a readable pickle (truncated or corrupt?): {msg}") from None


def _torch_refusal(exc: BaseException) -> str:
    m = re.search(r"GLOBAL ([\w.]+)", str(exc))
    if m:
        return f"the file references {m.group(1)}, which is not tensor data"
    line = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
    return line[:200]


# ---------------------------------------------------------------------------------------------
# NVIDIA stylegan2-ada-pytorch / stylegan3 (StyleGAN2 networks) pickles
# ---------------------------------------------------------------------------------------------

_MAPPING_KEYS = {"num_layers", "lr_multiplier", "w_avg_beta", "layer_features", "embed_features", "activation"}
_SYNTH_KEYS = {"channel_base", "channel_max", "num_fp16_res", "conv_clamp", "architecture", "resample_filter",
               "use_noise", "fp16_channels_last", "fused_modconv_default", "kernel_size", "activation"}
_IGNORED_TOP_KEYS = {"epochs"}  # bookkeeping some forks add to Generator's kwargs


def _placeholder_tensors(obj: PersistentPlaceholder, prefix: str, out: dict[str, torch.Tensor], where: str) -> None:
    st = obj.state
    skip = st.get("_non_persistent_buffers_set") or set()
    for kind in ("_parameters", "_buffers"):
        for name, t in (st.get(kind) or {}).items():
            if t is None or name in skip:
                continue
            if not isinstance(t, torch.Tensor):
                raise CheckpointError(f"{where}: {prefix}{name} is not a tensor")
            out[prefix + name] = t.detach()
    for name, child in (st.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, PersistentPlaceholder):
            raise CheckpointError(f"{where}: sub-module {prefix}{name} is not a network object")
        _placeholder_tensors(child, f"{prefix}{name}.", out, where)


def nvidia_config(init_kwargs: dict[str, Any], *, where: str = "checkpoint") -> GeneratorConfig:
    """stylegan2-ada-pytorch Generator init kwargs -> GeneratorConfig (unsupported options named)."""
    kw = dict(init_kwargs)
    mk = dict(kw.pop("mapping_kwargs", None) or {})
    sk = dict(kw.pop("synthesis_kwargs", None) or {})
    # Older configs pass synthesis options at top level (Generator forwards **synthesis_kwargs).
    for k in list(kw):
        if k in _SYNTH_KEYS:
            sk.setdefault(k, kw.pop(k))
    if kw.pop("c_dim", 0):
        raise CheckpointError(f"{where}: conditional generators (c_dim > 0) are not supported")
    for k in _IGNORED_TOP_KEYS:
        kw.pop(k, None)
    needed = ("z_dim", "w_dim", "img_resolution", "img_channels")
    missing = [k for k in needed if k not in kw]
    if missing:
        raise CheckpointError(f"{where}: G_ema init kwargs lack {', '.join(missing)}")
    unknown = sorted(set(kw) - set(needed)) + sorted(set(mk) - _MAPPING_KEYS) + sorted(set(sk) - _SYNTH_KEYS)
    if unknown:
        raise CheckpointError(f"{where}: unsupported generator options {', '.join(unknown)} (not a StyleGAN2 G?)")
    if mk.get("layer_features") not in (None, kw["w_dim"]) or mk.get("activation", "lrelu") != "lrelu":
        raise CheckpointError(f"{where}: mapping network with layer_features/activation other than w_dim/lrelu is not supported")
    if sk.get("architecture", "skip") != "skip":
        raise CheckpointError(f"{where}: synthesis architecture {sk['architecture']!r} is not supported (only 'skip')")
    if list(sk.get("resample_filter", [1, 3, 3, 1])) != [1, 3, 3, 1] or sk.get("kernel_size", 3) != 3 \
            or not sk.get("use_noise", True) or sk.get("activation", "lrelu") != "lrelu":
        raise CheckpointError(f"{where}: only the standard [1,3,3,1] filter, 3x3 kernels, lrelu and per-layer noise "
                              f"are supported")
    try:
        return GeneratorConfig(
            z_dim=int(kw["z_dim"]), w_dim=int(kw["w_dim"]), resolution=int(kw["img_resolution"]),
            img_channels=int(kw["img_channels"]), mapping_layers=int(mk.get("num_layers", 8)),
            lr_multiplier=float(mk.get("lr_multiplier", 0.01)),
            w_avg_beta=float(mk.get("w_avg_beta", 0.995)) if mk.get("w_avg_beta", 0.995) is not None else 0.995,
            channel_base=int(sk.get("channel_base", 32768)), channel_max=int(sk.get("channel_max", 512)),
            conv_clamp=None if sk.get("conv_clamp") is None else float(sk["conv_clamp"]),
            num_fp16_res=int(sk.get("num_fp16_res", 0)))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{where}: unsupported generator configuration: {exc}") from None


def _check_kernel(v: torch.Tensor, expected: torch.Tensor, name: str, where: str) -> None:
    """A stored FIR buffer must be the [1,3,3,1] filter (any scale): the only one the layers implement."""
    f = v.to(torch.float32)
    if f.shape != expected.shape or not torch.allclose(f / f.sum(), expected, atol=1e-6):
        raise CheckpointError(f"{where}: {name} is not the standard [1,3,3,1] filter; unsupported")


def _check_filters(tensors: dict[str, torch.Tensor], suffix: str, expected: torch.Tensor, where: str) -> None:
    for k in [k for k in tensors if k.endswith(suffix)]:
        _check_kernel(tensors.pop(k), expected, k, where)


def generator_from_nvidia_pickle(data: bytes, *, where: str = "checkpoint") -> Generator:
    """NVIDIA network pickle bytes -> Generator built from G_ema's init kwargs and weights."""
    root = restricted_load(data, where=where)
    g = root.get("G_ema") if isinstance(root, dict) else root
    if not isinstance(g, PersistentPlaceholder):
        keys = ", ".join(map(str, list(root)[:6])) if isinstance(root, dict) else type(root).__name__
        raise CheckpointError(f"{where}: no G_ema network in this pickle (found {keys}); "
                              f"expected a stylegan2-ada-pytorch network snapshot")
    if g.class_name != "Generator":
        raise CheckpointError(f"{where}: G_ema is a {g.class_name}, not a Generator")
    init_kwargs = g.state.get("_init_kwargs")
    if not isinstance(init_kwargs, dict) or g.state.get("_init_args"):
        raise CheckpointError(f"{where}: G_ema carries no init kwargs (not saved by NVIDIA's persistence)")
    config = nvidia_config(init_kwargs, where=where)
    tensors: dict[str, torch.Tensor] = {}
    _placeholder_tensors(g, "", tensors, where)
    if "synthesis.b4.const" not in tensors:
        raise CheckpointError(f"{where}: G_ema has no synthesis.b4.const: not a StyleGAN2 generator "
                              f"(StyleGAN3 and other architectures are not supported)")
    _check_filters(tensors, "resample_filter", make_fir_filter(), where)
    # w_avg_beta=None generators keep no w_avg: zeros make truncation a no-op toward the origin.
    tensors.setdefault("mapping.w_avg", torch.zeros(config.w_dim))
    return _build(config, tensors, where)


def _build(config: GeneratorConfig, tensors: dict[str, torch.Tensor], where: str) -> Generator:
    G = Generator(config, seed=None)
    try:
        load_state_strict(G, tensors, where=where)
    except StoreError as exc:
        raise CheckpointError(str(exc)) from None
    return G.eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------
# rosinality stylegan2-pytorch .pt
# ---------------------------------------------------------------------------------------------

def rosinality_name_map(resolution: int, mapping_layers: int) -> dict[str, tuple[str, str]]:
    """rosinality name -> (project name, how): how is 'copy', 'squeeze0' (drop a leading 1) or 'scalar'."""
    m: dict[str, tuple[str, str]] = {}
    for i in range(mapping_layers):
        m[f"style.{i + 1}.weight"] = (f"mapping.fc{i}.weight", "copy")
        m[f"style.{i + 1}.bias"] = (f"mapping.fc{i}.bias", "copy")
    m["input.input"] = ("synthesis.b4.const", "squeeze0")

    def conv(src: str, dst: str, noise_idx: int) -> None:
        m[f"{src}.conv.weight"] = (f"{dst}.weight", "squeeze0")
        m[f"{src}.conv.modulation.weight"] = (f"{dst}.affine.weight", "copy")
        m[f"{src}.conv.modulation.bias"] = (f"{dst}.affine.bias", "copy")
        m[f"{src}.noise.weight"] = (f"{dst}.noise_strength", "scalar")
        m[f"{src}.activate.bias"] = (f"{dst}.bias", "copy")
        m[f"noises.noise_{noise_idx}"] = (f"{dst}.noise_const", "squeeze01")

    def torgb(src: str, dst: str) -> None:
        m[f"{src}.conv.weight"] = (f"{dst}.weight", "squeeze0")
        m[f"{src}.conv.modulation.weight"] = (f"{dst}.affine.weight", "copy")
        m[f"{src}.conv.modulation.bias"] = (f"{dst}.affine.bias", "copy")
        m[f"{src}.bias"] = (f"{dst}.bias", "flatten")

    conv("conv1", "synthesis.b4.conv1", 0)
    torgb("to_rgb1", "synthesis.b4.torgb")
    for j, res in enumerate(2 ** k for k in range(3, resolution.bit_length())):
        conv(f"convs.{2 * j}", f"synthesis.b{res}.conv0", 2 * j + 1)
        conv(f"convs.{2 * j + 1}", f"synthesis.b{res}.conv1", 2 * j + 2)
        torgb(f"to_rgbs.{j}", f"synthesis.b{res}.torgb")
    return m


def _channel_rule(chans: dict[int, int], where: str) -> tuple[int, int]:
    """Layer widths by resolution -> (channel_base, channel_max) with width = min(base // res, max)."""
    cmax = max(chans.values())
    for base in [32768, 16384] + [c * r for r, c in sorted(chans.items())]:
        if all(min(base // r, cmax) == c for r, c in chans.items()):
            return base, cmax
    raise CheckpointError(f"{where}: channel widths {chans} are not min(channel_base // res, channel_max) "
                          f"for any channel_base; unsupported")


def _infer_rosinality_config(sd: dict[str, torch.Tensor], args: Any, where: str) -> GeneratorConfig:
    try:
        c4, w_dim = sd["input.input"].shape[1], sd["conv1.conv.modulation.weight"].shape[1]
    except KeyError:
        raise CheckpointError(f"{where}: not a rosinality StyleGAN2 state dict (no input.input / conv1)") from None
    n_mlp = 0
    while f"style.{n_mlp + 1}.weight" in sd:
        n_mlp += 1
    n_up = 0
    while f"to_rgbs.{n_up}.conv.weight" in sd:
        n_up += 1
    resolution = 4 * 2 ** n_up
    chans = {4: int(c4)}
    for j in range(n_up):
        chans[8 * 2 ** j] = int(sd[f"convs.{2 * j}.conv.weight"].shape[1])
    base, cmax = _channel_rule(chans, where)
    lr_mlp = 0.01
    if isinstance(args, argparse.Namespace | dict):
        a = vars(args) if isinstance(args, argparse.Namespace) else args
        lr_mlp = float(a.get("lr_mlp", lr_mlp))
    try:
        return GeneratorConfig(z_dim=int(sd["style.1.weight"].shape[1]) if n_mlp else int(w_dim), w_dim=int(w_dim),
                               mapping_layers=n_mlp, resolution=resolution, channel_base=base, channel_max=cmax,
                               lr_multiplier=lr_mlp, img_channels=int(sd["to_rgb1.conv.weight"].shape[1]))
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"{where}: unsupported rosinality generator: {exc}") from None


def generator_from_rosinality(obj: Any, *, where: str = "checkpoint") -> Generator:
    """A loaded rosinality checkpoint ({'g_ema': state_dict, 'latent_avg': (w_dim,)} ) -> Generator."""
    if isinstance(obj, dict) and "g_ema" in obj:
        sd, latent_avg, args = obj["g_ema"], obj.get("latent_avg"), obj.get("args")
    elif isinstance(obj, dict) and "style.1.weight" in obj:
        sd, latent_avg, args = obj, None, None
    else:
        keys = ", ".join(map(str, list(obj)[:6])) if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{where}: no 'g_ema' generator state dict here (found {keys}); expected a "
                              f"rosinality stylegan2-pytorch checkpoint")
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{where}: 'g_ema' is not a state dict of tensors")
    config = _infer_rosinality_config(sd, args, where)
    name_map = rosinality_name_map(config.resolution, config.mapping_layers)
    tensors: dict[str, torch.Tensor] = {}
    leftover = []
    kernel = make_fir_filter()
    for k, v in sd.items():
        if k in name_map:
            dst, how = name_map[k]
            v = v.detach().to(torch.float32)
            if how == "squeeze0":
                v = v[0]
            elif how == "squeeze01":
                v = v[0, 0]
            elif how == "scalar":
                v = v.reshape([])
            elif how == "flatten":
                v = v.reshape(-1)
            tensors[dst] = v
        elif k.endswith(".kernel"):  # blur/upsample FIR buffers
            _check_kernel(v, kernel, k, where)
        else:
            leftover.append(k)
    if leftover:
        raise CheckpointError(f"{where}: unrecognised tensors {', '.join(leftover[:4])}: not a StyleGAN2 generator "
                              f"of this layout")
    if latent_avg is not None:
        tensors["mapping.w_avg"] = torch.as_tensor(latent_avg).detach().to(torch.float32).reshape(-1)
    else:
        tensors["mapping.w_avg"] = torch.zeros(config.w_dim)
    return _build(config, tensors, where)


def load_rosinality_file(path: str | Path) -> Generator:
    return generator_from_rosinality(_torch_load_safe(path), where=str(path))


def _torch_load_safe(path: str | Path) -> Any:
    """torch.load(weights_only=True) (plus argparse.Namespace), with one-line CheckpointErrors."""
    where = str(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with torch.serialization.safe_globals([argparse.Namespace]):
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise UnsafeCheckpointError(f"{where}: refused to load: {_torch_refusal(exc)} (nothing was executed)") from None
        except (RuntimeError, EOFError, ValueError, OSError) as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CheckpointError(f"{where}: not a readable torch checkpoint (truncated or corrupt?): {msg}") from None
    return obj


def load_nvidia_file(path: str | Path) -> Generator:
    data = Path(path).read_bytes()
    if not data or data[:1] != b"\x80":
        raise CheckpointError(f"{path}: not a pickle file (expected a stylegan2-ada-pytorch network .pkl)")
    return generator_from_nvidia_pickle(data, where=str(path))


# ---------------------------------------------------------------------------------------------
# Discriminators, for fine-tuning: an NVIDIA snapshot's D, a rosinality training snapshot's 'd'
# ---------------------------------------------------------------------------------------------

_D_TOP_KEYS = {"c_dim", "img_resolution", "img_channels", "architecture", "channel_base", "channel_max",
               "num_fp16_res", "conv_clamp", "cmap_dim", "block_kwargs", "mapping_kwargs", "epilogue_kwargs"}
_D_BLOCK_KEYS = {"activation", "resample_filter", "fp16_channels_last", "freeze_layers"}
_D_EPILOGUE_KEYS = {"mbstd_group_size", "mbstd_num_channels", "activation"}
_PAPER_MBSTD_GROUP = 4


def _kwargs_dict(value: Any, name: str, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CheckpointError(f"{where}: D's {name} is a {type(value).__name__}, not a dict of options")
    return dict(value)


def nvidia_discriminator_config(init_kwargs: dict[str, Any], *, where: str = "checkpoint") -> DiscriminatorConfig:
    """stylegan2-ada-pytorch Discriminator init kwargs -> DiscriminatorConfig (unsupported options named).

    Accepted without a counterpart here (docs/generator.md, "Importing the discriminator"): num_fp16_res
    and conv_clamp (float16 measures; this D computes in float32), block_kwargs.freeze_layers and
    fp16_channels_last (training switches), mapping_kwargs (NVIDIA builds no mapping network when
    c_dim is 0), epilogue_kwargs.mbstd_group_size None (becomes the paper's 4).
    """
    kw = dict(init_kwargs)
    bk = _kwargs_dict(kw.pop("block_kwargs", None), "block_kwargs", where)
    mk = _kwargs_dict(kw.pop("mapping_kwargs", None), "mapping_kwargs", where)
    ek = _kwargs_dict(kw.pop("epilogue_kwargs", None), "epilogue_kwargs", where)
    if kw.get("c_dim", 0):
        raise CheckpointError(f"{where}: conditional discriminators (D c_dim={kw['c_dim']!r} > 0) are not supported; "
                              f"fine-tune from an unconditional snapshot or without its D")
    unknown = (sorted(set(kw) - _D_TOP_KEYS) + [f"block_kwargs.{k}" for k in sorted(set(bk) - _D_BLOCK_KEYS)]
               + [f"mapping_kwargs.{k}" for k in sorted(set(mk) - _MAPPING_KEYS)]
               + [f"epilogue_kwargs.{k}" for k in sorted(set(ek) - _D_EPILOGUE_KEYS)])
    if unknown:
        raise CheckpointError(f"{where}: unsupported discriminator options {', '.join(unknown)} (only "
                              f"stylegan2-ada-pytorch's Discriminator kwargs are known; a D of another codebase?)")
    missing = [k for k in ("img_resolution", "img_channels") if k not in kw]
    if missing:
        raise CheckpointError(f"{where}: D init kwargs lack {', '.join(missing)} (not saved by NVIDIA's persistence?)")
    arch = kw.get("architecture", "resnet")
    if arch != "resnet":
        raise CheckpointError(f"{where}: discriminator architecture {arch!r} is not supported (only 'resnet', the "
                              f"paper's config F); fine-tune with a new seeded D instead of this file's")
    if kw.get("cmap_dim") not in (None, 0):
        raise CheckpointError(f"{where}: D cmap_dim={kw['cmap_dim']!r} is a conditioning option; an unconditional "
                              f"D has None or 0")
    for name, opts in (("block_kwargs", bk), ("epilogue_kwargs", ek)):
        if opts.get("activation", "lrelu") != "lrelu":
            raise CheckpointError(f"{where}: D {name}.activation={opts['activation']!r} is not supported (only 'lrelu')")
    try:
        standard_filter = [float(v) for v in bk.get("resample_filter", [1, 3, 3, 1])] == [1, 3, 3, 1]
    except (TypeError, ValueError):
        standard_filter = False
    if not standard_filter:
        raise CheckpointError(f"{where}: D block_kwargs.resample_filter={bk['resample_filter']!r} is not supported "
                              f"(only the standard [1,3,3,1] filter)")
    group = ek.get("mbstd_group_size", _PAPER_MBSTD_GROUP)
    try:
        if kw.get("conv_clamp") is not None:
            float(kw["conv_clamp"])
        int(kw.get("num_fp16_res", 0))
        return DiscriminatorConfig(
            resolution=int(kw["img_resolution"]), img_channels=int(kw["img_channels"]),
            channel_base=int(kw.get("channel_base", 32768)), channel_max=int(kw.get("channel_max", 512)),
            mbstd_group_size=_PAPER_MBSTD_GROUP if group is None else int(group),
            mbstd_features=int(ek.get("mbstd_num_channels", 1)))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{where}: unsupported discriminator configuration: {exc}") from None


def _build_discriminator(config: DiscriminatorConfig, tensors: dict[str, torch.Tensor], where: str, what: str,
                         file_names: dict[str, str] | None = None) -> Discriminator:
    """Discriminator(config) holding exactly `tensors` (every name, every shape); left in train mode, grads on."""
    names = file_names or {}
    desc = (f"resolution {config.resolution}, channel_base {config.channel_base}, channel_max {config.channel_max}, "
            f"mbstd_features {config.mbstd_features}")
    D = Discriminator(config, seed=None)
    expected = D.state_dict()

    def listed(keys: list[str]) -> str:
        return ", ".join(names.get(k, k) for k in keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")

    missing = [k for k in expected if k not in tensors]
    if missing:
        raise CheckpointError(f"{where}: {what} lacks tensor(s) {listed(missing)} that a 'resnet' D with {desc} has "
                              f"(truncated or edited file?); use the snapshot as its training run saved it")
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise CheckpointError(f"{where}: {what} has tensor(s) {listed(extra)} that a 'resnet' D with {desc} has not: "
                              f"its settings do not describe its weights; unsupported")
    for k, v in expected.items():
        t = tensors[k]
        if tuple(t.shape) != tuple(v.shape) or not t.is_floating_point():
            raise CheckpointError(f"{where}: {what} tensor {names.get(k, k)} is {t.dtype} of shape {tuple(t.shape)}, "
                                  f"but a 'resnet' D with {desc} needs float of shape {tuple(v.shape)}: its settings "
                                  f"do not describe its weights (edited file?)")
    D.load_state_dict({k: t.detach().to(torch.float32) for k, t in tensors.items()}, strict=True)
    return D


def _check_same_images(config: DiscriminatorConfig, g_res: Any, g_channels: Any, where: str, what: str) -> None:
    if (config.resolution, config.img_channels) != (g_res, g_channels):
        raise CheckpointError(f"{where}: {what} takes {config.img_channels}x{config.resolution}x{config.resolution} images "
                              f"but the generator makes {g_channels}x{g_res}x{g_res}: D and G must come from the same "
                              f"training run; use that run's snapshot, or fine-tune with a new seeded D")


def discriminator_from_nvidia_pickle(data: bytes, *, where: str = "checkpoint") -> Discriminator | None:
    """NVIDIA network pickle bytes -> its D as a Discriminator, or None when the pickle has no D entry.

    The D comes back as the constructor leaves it (train mode, requires_grad on), every tensor loaded
    strictly; its resolution and image channels must be G_ema's. Raises CheckpointError naming what does not fit.
    """
    root = restricted_load(data, where=where)
    if not isinstance(root, dict) or root.get("D") is None:
        return None
    d = root["D"]
    if not isinstance(d, PersistentPlaceholder) or d.class_name != "Discriminator":
        found = d.class_name if isinstance(d, PersistentPlaceholder) else type(d).__name__
        raise CheckpointError(f"{where}: D is a {found}, not a Discriminator network; expected a stylegan2-ada-pytorch "
                              f"network snapshot")
    init_kwargs = d.state.get("_init_kwargs")
    if not isinstance(init_kwargs, dict) or d.state.get("_init_args"):
        raise CheckpointError(f"{where}: D carries no init kwargs (not saved by NVIDIA's persistence)")
    config = nvidia_discriminator_config(init_kwargs, where=where)
    g = root.get("G_ema")
    g_kwargs = g.state.get("_init_kwargs") if isinstance(g, PersistentPlaceholder) else None
    if not isinstance(g_kwargs, dict):
        raise CheckpointError(f"{where}: the pickle has a D but no G_ema with init kwargs to check it against; "
                              f"expected a stylegan2-ada-pytorch network snapshot (G, D, G_ema)")
    _check_same_images(config, g_kwargs.get("img_resolution"), g_kwargs.get("img_channels"), where, "D")
    tensors: dict[str, torch.Tensor] = {}
    _placeholder_tensors(d, "", tensors, where)
    _check_filters(tensors, "resample_filter", make_fir_filter(), where)
    return _build_discriminator(config, tensors, where, "D")


def load_nvidia_discriminator(path: str | Path) -> Discriminator | None:
    """The D of an NVIDIA stylegan2-ada-pytorch .pkl (see discriminator_from_nvidia_pickle); None without one."""
    data = Path(path).read_bytes()
    if not data or data[:1] != b"\x80":
        raise CheckpointError(f"{path}: not a pickle file (expected a stylegan2-ada-pytorch network .pkl)")
    return discriminator_from_nvidia_pickle(data, where=str(path))


def rosinality_discriminator_name_map(resolution: int) -> dict[str, str]:
    """rosinality Discriminator name -> project (= NVIDIA) name; its Blur '.kernel' buffers are checked, then dropped.

    convs.0 is fromrgb; convs.{i} (i >= 1) the residual block at resolution R / 2^(i-1), whose conv1/conv2/skip
    are conv0/conv1/skip here; final_conv and final_linear.0/.1 the 4x4 head's conv, fc and out.
    """
    m = {"convs.0.0.weight": f"b{resolution}.fromrgb.weight", "convs.0.1.bias": f"b{resolution}.fromrgb.bias"}
    for i, res in enumerate((2 ** k for k in range(resolution.bit_length() - 1, 2, -1)), start=1):
        m[f"convs.{i}.conv1.0.weight"] = f"b{res}.conv0.weight"
        m[f"convs.{i}.conv1.1.bias"] = f"b{res}.conv0.bias"
        m[f"convs.{i}.conv2.1.weight"] = f"b{res}.conv1.weight"
        m[f"convs.{i}.conv2.2.bias"] = f"b{res}.conv1.bias"
        m[f"convs.{i}.skip.1.weight"] = f"b{res}.skip.weight"
    m.update({"final_conv.0.weight": "b4.conv.weight", "final_conv.1.bias": "b4.conv.bias",
              "final_linear.0.weight": "b4.fc.weight", "final_linear.0.bias": "b4.fc.bias",
              "final_linear.1.weight": "b4.out.weight", "final_linear.1.bias": "b4.out.bias"})
    return m


def discriminator_from_rosinality(obj: Any, *, where: str = "checkpoint") -> Discriminator | None:
    """A loaded rosinality training snapshot -> its 'd' as a Discriminator, or None when there is no 'd'.

    Same contract as discriminator_from_nvidia_pickle; the image size must be g_ema's. rosinality's
    minibatch-std group is fixed at 4 in its code, so the config gets 4.
    """
    if not isinstance(obj, dict) or obj.get("d") is None:
        return None
    sd = obj["d"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{where}: 'd' is not a state dict of tensors")
    if "convs.0.0.weight" not in sd or "final_conv.0.weight" not in sd:
        raise CheckpointError(f"{where}: 'd' is not a rosinality StyleGAN2 discriminator (no convs.0.0.weight / "
                              f"final_conv.0.weight); unsupported")
    n_blocks = 0
    while f"convs.{n_blocks + 1}.conv1.0.weight" in sd:
        n_blocks += 1
    resolution = 4 * 2 ** n_blocks
    try:
        final_in, c4 = int(sd["final_conv.0.weight"].shape[1]), int(sd["final_conv.0.weight"].shape[0])
        chans = {4: c4, **{resolution >> j: int(sd[f"convs.{j + 1}.conv1.0.weight"].shape[0]) for j in range(n_blocks)}}
        img_channels = int(sd["convs.0.0.weight"].shape[1])
    except IndexError:
        raise CheckpointError(f"{where}: 'd' has convolution weights that are not 4-d; not a rosinality "
                              f"StyleGAN2 discriminator") from None
    base, cmax = _channel_rule(chans, where)
    try:
        config = DiscriminatorConfig(resolution=resolution, channel_base=base, channel_max=cmax,
                                     mbstd_group_size=_PAPER_MBSTD_GROUP, mbstd_features=final_in - c4,
                                     img_channels=img_channels)
    except ValueError as exc:
        raise CheckpointError(f"{where}: unsupported rosinality discriminator: {exc}") from None
    name_map = rosinality_discriminator_name_map(resolution)
    tensors: dict[str, torch.Tensor] = {}
    leftover = []
    kernel = make_fir_filter()
    for k, v in sd.items():
        if k in name_map:
            tensors[name_map[k]] = v
        elif k.endswith(".kernel"):  # Blur buffers of the down-sampling convs
            _check_kernel(v, kernel, f"'d' {k}", where)
        else:
            leftover.append(k)
    if leftover:
        raise CheckpointError(f"{where}: unrecognised tensors in 'd' ({', '.join(leftover[:4])}): not a rosinality "
                              f"StyleGAN2 discriminator of this layout")
    g = obj.get("g_ema")
    if not isinstance(g, dict) or not isinstance(g.get("to_rgb1.conv.weight"), torch.Tensor):
        raise CheckpointError(f"{where}: the file has a 'd' but no 'g_ema' generator to check it against; expected a "
                              f"rosinality stylegan2-pytorch training snapshot")
    n_up = 0
    while f"to_rgbs.{n_up}.conv.weight" in g:
        n_up += 1
    g_channels = int(g["to_rgb1.conv.weight"].shape[1]) if g["to_rgb1.conv.weight"].ndim >= 2 else None
    _check_same_images(config, 4 * 2 ** n_up, g_channels, where, "'d'")
    back = {v: k for k, v in name_map.items()}
    return _build_discriminator(config, tensors, where, "'d'", file_names=back)


def load_rosinality_discriminator(path: str | Path) -> Discriminator | None:
    """The 'd' of a rosinality stylegan2-pytorch training snapshot (.pt); None when the file has none."""
    return discriminator_from_rosinality(_torch_load_safe(path), where=str(path))


def load_discriminator(checkpoint: str | os.PathLike | None) -> Discriminator | None:
    """The discriminator saved beside a generator checkpoint, to fine-tune from; None where there is none.

    NVIDIA .pkl: its D; rosinality .pt/.pth: a training snapshot's 'd' (converted FFHQ files hold only
    g_ema: None). None, a project directory or .safetensors (generators only): None. The D comes back
    in train mode with grads on, as Discriminator's constructor leaves it. Raises CheckpointError
    (a ValueError) with a one-line message, like load_generator.
    """
    if checkpoint is None:
        return None
    path = Path(checkpoint)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found (give the .pkl or .pt the generator was imported from)")
    suffix = path.suffix.lower()
    if path.is_dir() or suffix == ".safetensors":
        return None
    try:
        if suffix == ".pkl":
            return load_nvidia_discriminator(path)
        if suffix in (".pt", ".pth"):
            return load_rosinality_discriminator(path)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read: {exc.strerror or exc}") from None
    raise CheckpointError(f"{path}: unknown checkpoint type {suffix or '(no suffix)'!r}; expected .pkl (NVIDIA), "
                          f".pt/.pth (rosinality) or a project directory")
