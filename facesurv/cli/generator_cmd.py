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


def register(app: typer.Typer) -> None:
    app.add_typer(generator_app, name="generator")
