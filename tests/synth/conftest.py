"""Shared set-up for the synth cohort tests: one tiny seeded generator, the gbsg2 import,
and a workspace whose params make `cohort synth` fast (res 16, few direction samples)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch
import yaml

TINY_GENERATOR = {"resolution": 16, "channel_max": 16, "channel_base": 32768, "mapping_layers": 8,
                  "lr_multiplier": 0.01, "z_dim": 512, "w_dim": 512}


@contextlib.contextmanager
def one_thread():
    """Tiny generators run several times faster on one intra-op thread on a busy 2-core box
    (the `cohort synth` command does the same); restored afterwards for other areas' tests."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def single_thread():
    """The one_thread context manager, for module-scoped fixtures."""
    return one_thread


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="session")
def tiny_G():
    from embedding.stylegan2 import GeneratorConfig, load_generator

    G, info = load_generator(None, config=GeneratorConfig(**TINY_GENERATOR), seed=0)
    assert info.is_random_init
    return G


@pytest.fixture(scope="session")
def tiny_direction(tiny_G):
    from embedding.direction import generator_direction

    with one_thread():
        return generator_direction(tiny_G, space="w", samples=16, seed=0, iterations=20)


@pytest.fixture(scope="session")
def gbsg2_clinical():
    from features.cohort import import_cohort

    return import_cohort("gbsg2", seed=0, admission_start="2012-01-01", admission_span_days=1460,
                         record_lag_days=14)


@pytest.fixture()
def synth_workspace(workspace):
    """A workspace whose params.yaml renders 16 px portraits with a quick direction estimate."""
    path = Path(workspace.params_path)
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    raw["generator"].update({k: v for k, v in TINY_GENERATOR.items() if k in raw["generator"]})
    raw["synth"].update({"direction_samples": 8, "direction_iterations": 10, "patients": 60})
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return workspace


def make_face_folder(root: Path, *, per_cell: int = 3, seed: int = 0) -> Path:
    """A labelled face folder: small seeded noise JPEGs, `per_cell` per sex and age decade
    20-89, and labels.csv (file, age, sex, race_group) as ../shared/utkface has it."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = ["file,age,sex,race_group"]
    k = 0
    for sex in ("F", "M"):
        for decade in range(20, 90, 10):
            for _ in range(per_cell):
                name = f"face_{k:04d}.jpg"
                Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(root / name, quality=90)
                rows.append(f"{name},{decade + int(rng.integers(0, 10))},{sex},{('white', 'black', 'asian')[k % 3]}")
                k += 1
    (root / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def face_folder(tmp_path_factory):
    return make_face_folder(tmp_path_factory.mktemp("faces"), per_cell=6)
