"""`facesurv generator import|info|sample`: StyleGAN2 checkpoints in the project's format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from facesurv.cli.common import WorkspaceOpt, console, open_workspace, out

generator_app = typer.Typer(help="Import StyleGAN2 checkpoints safely and inspect the generator the pipeline uses.",
                            no_args_is_help=True)


def _load(checkpoint):
    from embedding.stylegan2 import CheckpointError, load_generator
    from ground.errors import DataError

    try:
        return load_generator(checkpoint)
    except CheckpointError as exc:
        raise DataError(str(exc)) from None


def _print_info(G, info, sha_label: str = "sha256") -> None:
    for key, value in info.config.items():
        out.print(f"{key}: {value}")
    out.print(f"num_ws: {G.num_ws}")
    out.print(f"source: {info.source}")
    out.print(f"{sha_label}: {info.sha256}")
    if info.is_random_init:
        console.print(f"[yellow]warning:[/yellow] {info.description}")
    else:
        out.print(f"description: {info.description}")


@generator_app.command("import")
def import_(
    checkpoint: Annotated[Path, typer.Argument(help="NVIDIA stylegan2-ada-pytorch .pkl, rosinality .pt/.pth, "
                                                     "or a facesurv generator directory / .safetensors file.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to write generator.safetensors and config.json into.")],
    workspace: WorkspaceOpt = None,
) -> None:
    """Convert a checkpoint to the project's format without running code stored in it; print config and sha256.

    The conversion needs no workspace (--workspace is accepted for uniformity and not read).
    """
    from embedding.stylegan2 import save_generator
    from ground.atomic import atomic_dir, ensure_writable_dir

    G, info = _load(checkpoint)
    ensure_writable_dir(out_dir.parent if out_dir.parent != Path("") else Path("."))
    with atomic_dir(out_dir) as tmp:
        sha = save_generator(G, tmp, source=str(checkpoint), description=info.description)
    if sha != info.sha256:  # the file written must be the one lineage will record
        raise RuntimeError(f"sha256 of the written file {sha} differs from the converted generator's {info.sha256}")
    _print_info(G, info)
    out.print(f"wrote {out_dir / 'generator.safetensors'} and {out_dir / 'config.json'}")


@generator_app.command("info")
def info_(
    path: Annotated[Path | None, typer.Argument(help="A checkpoint or generator directory. Default: the workspace's "
                                                     "generator.checkpoint (or its seeded random-init stand-in).")] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Print a generator's configuration and sha256 (what lineage records for it)."""
    if path is not None:
        G, info = _load(path)
    else:
        from facesurv.components import components

        G, info = components(*open_workspace(workspace)).generator()
    _print_info(G, info)


@generator_app.command("sample")
def sample(
    out_png: Annotated[Path, typer.Option("--out", help="PNG file for the grid of samples.")],
    count: Annotated[int, typer.Option(help="Number of samples (seeds seed..seed+count-1).", min=1, max=256)] = 16,
    seed: Annotated[int, typer.Option(help="First z seed.")] = 0,
    truncation_psi: Annotated[float | None, typer.Option(help="Default: generator.truncation_psi.")] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Render a grid of samples from the workspace's generator (a quick look at what it produces)."""
    import math

    import numpy as np
    import torch
    from PIL import Image

    from ground.atomic import atomic_path

    ws, params = open_workspace(workspace)
    from facesurv.components import components

    G, info = components(ws, params).generator()
    psi = params.generator.truncation_psi if truncation_psi is None else truncation_psi
    zs = torch.stack([torch.randn(G.z_dim, generator=torch.Generator().manual_seed(seed + i)) for i in range(count)])
    with torch.no_grad():
        img = G(zs, truncation_psi=psi, noise_mode="const")
    arr = ((img.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    r = G.img_resolution
    grid = np.zeros((rows * r, cols * r, arr.shape[-1]), dtype=np.uint8)
    for i, a in enumerate(arr):
        grid[(i // cols) * r:(i // cols + 1) * r, (i % cols) * r:(i % cols + 1) * r] = a
    with atomic_path(out_png, suffix=".png") as tmp:
        Image.fromarray(grid.squeeze(-1) if grid.shape[-1] == 1 else grid).save(tmp, format="PNG")
    out.print(f"wrote {out_png}: {count} samples at {r}x{r}, truncation_psi {psi}, generator sha256 {info.sha256}")
    if info.is_random_init:
        console.print(f"[yellow]warning:[/yellow] {info.description}")


@generator_app.command("train")
def train_(
    kimg: Annotated[float | None, typer.Option(help="Thousands of real images to show in all (default: "
                                                    "generator_training.kimg). A resumed run continues to it.")] = None,
    promote: Annotated[bool, typer.Option("--promote", help="Make the new version the champion when done.")] = False,
    no_register: Annotated[bool, typer.Option("--no-register", help="Train and export only.")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Train (or resume) a StyleGAN2 + ADA generator on the workspace's aligned photos; track it in
    MLflow and register it (alias challenger). Settings: the generator_training section of params.yaml.
    Several processes or GPUs: `torchrun --nproc_per_node N $(which facesurv) generator train`, with
    generator_training.slices a multiple of N."""
    from flows.generator_steps import promote as promote_version
    from flows.generator_steps import train_generator

    ws, params = open_workspace(workspace)
    result = train_generator(ws, params, kimg=kimg, register=not no_register, log=out.print)
    if result.get("rank", 0) != 0:   # under torchrun: process 0 reports, tracks, exports and registers
        return
    out.print(f"exported {result['run_dir']}/generator (sha256 {result['sha256']}), {result['kimg']:g} kimg in "
              f"{result['seconds']:.0f} s; MLflow run {result['mlflow_run_id']}")
    if promote and result["version"] is not None:
        _print_promotion(promote_version(ws, params, result["version"]), params)


def _print_promotion(done: dict, params) -> None:
    name = params.generator_training.registered_name
    out.print(f"{name} v{done['version']} is now @{done['alias']} (was: "
              f"{'v' + done['previous'] if done['previous'] else 'none'}), sha256 {done['sha256'][:12]}")
    if done["uses_alias"]:
        out.print("the nightly flow embeds with it from its next run and re-embeds every photo that has no latent "
                  "for it yet")
    else:
        out.print(f"to embed with it, set generator.checkpoint: models:/{name}@{done['alias']} in params.yaml")


@generator_app.command("encoder")
def encoder_(
    force: Annotated[bool, typer.Option("--force", help="Train again even when this generator's encoder exists.")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Train the encoder of the workspace's generator on its own samples (settings: the encoder section of
    params.yaml); projection.init: encoder starts every photo at its guess. Kept per generator and settings."""
    from flows.encoder_steps import ensure_encoder

    ws, params = open_workspace(workspace)
    done = ensure_encoder(ws, params, force=force, log=out.print)
    what = "trained" if done["trained"] else "already trained"
    out.print(f"encoder {done['sha256'][:12]} ({done['space']} space) {what} for generator "
              f"{done['generator_version'] or done['generator_sha256'][:16]}: {done['path']}")
    if params.projection.init != "encoder":
        out.print("projection.init is mean: set projection.init: encoder in params.yaml to start projections from it")


@generator_app.command("promote")
def promote_(
    version: Annotated[str, typer.Argument(help="Registered version to promote (see `facesurv generator versions`).")],
    alias: Annotated[str, typer.Option(help="Alias to move.")] = "champion",
    workspace: WorkspaceOpt = None,
) -> None:
    """Move a registry alias (default champion) to a generator version."""
    from flows.generator_steps import promote as promote_version

    ws, params = open_workspace(workspace)
    _print_promotion(promote_version(ws, params, version, alias=alias), params)


@generator_app.command("versions")
def versions_(workspace: WorkspaceOpt = None) -> None:
    """List the registered generator versions, newest first, with aliases, sha256, kimg and KID."""
    from mlflow import MlflowClient

    from facesurv.components import components
    from training.generator_registry import generator_versions

    ws, params = open_workspace(workspace)
    name = params.generator_training.registered_name
    rows = generator_versions(MlflowClient(components(ws, params).tracking_uri), name)
    if not rows:
        out.print(f"{name}: no versions yet (train one with `facesurv generator train`)")
        return
    for r in rows:
        aliases = f" @{', @'.join(r['aliases'])}" if r["aliases"] else ""
        out.print(f"{name} v{r['version']}{aliases}: sha256 {r['sha256'][:12]}, {r['kimg']} kimg, KID {r['kid']}, "
                  f"photos {r['photos']} (DVC revision {r['photos_dvc_rev']}), parent {r['parent']}")


def register(app: typer.Typer) -> None:
    app.add_typer(generator_app, name="generator")
