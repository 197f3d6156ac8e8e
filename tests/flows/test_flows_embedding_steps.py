"""The nightly flow's projection: where its generator comes from and where it runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flows import embedding_steps
from ground.config import with_overrides
from ground.errors import ConfigError


def test_a_relative_checkpoint_is_found_under_the_workspace(workspace, params, tmp_path: Path) -> None:
    from embedding.stylegan2 import GeneratorConfig, load_generator
    from embedding.stylegan2.store import save_generator

    G, _ = load_generator(None, config=GeneratorConfig(resolution=8, channel_max=8, mapping_layers=2), seed=4)
    sha = save_generator(G, workspace.root / "generators" / "tiny", source="test")
    p = with_overrides(params, generator={"checkpoint": "generators/tiny"})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cwd = Path.cwd()
    os.chdir(elsewhere)  # params.yaml promises the workspace, not the current directory
    try:
        projection = embedding_steps.projection(workspace, p)
    finally:
        os.chdir(cwd)
    assert projection.generator_info.sha256 == sha and projection.G.img_resolution == 8
    assert Path(projection.generator_info.source) == workspace.root / "generators" / "tiny"


def test_projection_device_follows_the_setting(params) -> None:
    import torch

    from facesurv.components import Components

    def device(setting: str) -> str:
        return Components(None, with_overrides(params, projection={"device": setting})).device

    assert device("cpu") == "cpu"
    assert device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="projection.device is cuda but this machine has no CUDA device"):
            device("cuda")


def test_setting_paths_are_taken_under_the_workspace(workspace, tmp_path: Path) -> None:
    assert workspace.setting_path(None) is None
    assert workspace.setting_path("generators/g") == workspace.root / "generators" / "g"
    assert workspace.setting_path(str(tmp_path / "abs")) == tmp_path / "abs"
    assert workspace.setting_path("~/w.pth") == Path.home() / "w.pth"


def test_an_unknown_device_setting_is_refused() -> None:
    from embedding.projection import resolve_device

    with pytest.raises(ValueError, match="device must be auto, cpu or cuda, got 'tpu'"):
        resolve_device("tpu")
