"""Alignment fixtures: the real photos in ../shared/faces, aligned once per session (detection on
the large group photo is slow on 2 cores), at a small output size where the size does not matter."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def faces_dir(shared_dir: Path) -> Path:
    path = shared_dir / "faces"
    assert path.is_dir(), f"{path} is missing"
    return path


@pytest.fixture(scope="session")
def small_config(params):
    """The repository's align options with a 128 px output (4x supersampling, as FFHQ)."""
    from embedding.align import AlignConfig

    return dataclasses.replace(AlignConfig.from_object(params.align), output_size=128, transform_size=512)


@pytest.fixture(scope="session")
def aligner(small_config):
    from embedding.align import Aligner

    return Aligner(small_config)


@pytest.fixture(scope="session")
def faces_batch(faces_dir: Path, small_config, aligner, tmp_path_factory):
    """(BatchResult, out_dir) for ../shared/faces, aligned in this process (the worker-process
    path is exercised by test_align_batch.py's inbox)."""
    from embedding.align import align_directory

    out = tmp_path_factory.mktemp("faces-aligned")
    return align_directory(faces_dir, out, config=small_config, workers=1, aligner=aligner), out
