"""The generator-training command end to end: kill -9 and resume, the GPU benchmark script, the
photo loader and the run monitor (grids, KID from fixed latents)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
GEN = {"resolution": 8, "z_dim": 16, "w_dim": 16, "mapping_layers": 2, "channel_base": 64, "channel_max": 8}


def _workspace(root: Path, *, kimg: float, slices: int = 1) -> Path:
    root.mkdir(parents=True)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["generator"].update(GEN)
    raw["generator_training"].update({"photos": "photos", "kimg": kimg, "batch_size": 4, "tick_kimg": 0.008,
                                      "kid_fakes": 8, "kid_subsets": 2, "grid_samples": 4, "ema_kimg": 0.01,
                                      "device": "cpu", "slices": slices})
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    photos = root / "photos"
    photos.mkdir()
    rng = np.random.default_rng(5)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(photos / f"a{i}.png")
    return root


def _cli(root: Path, *args: str, launcher: tuple[str, ...] = ()) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    entry = Path(sys.executable).parent / "facesurv"   # the installed command, as a user runs it
    return subprocess.Popen([*launcher, str(entry), "generator", "train", "--no-register",
                             "--workspace", str(root), *args], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _exported_sha(root: Path) -> str:
    from embedding.fileio import sha256_file

    (weights,) = (root / "generators" / "runs").glob("*/generator/generator.safetensors")
    return sha256_file(weights)


@pytest.mark.slow
def test_kill_9_then_resume_gives_the_uninterrupted_generator(tmp_path):
    straight = _workspace(tmp_path / "straight", kimg=0.096)
    proc = _cli(straight)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out

    killed = _workspace(tmp_path / "killed", kimg=0.096)
    proc = _cli(killed)
    snapshots = killed / "generators" / "runs"
    deadline = time.time() + 300
    while time.time() < deadline and not list(snapshots.glob("*/snapshots/snapshot-*.safetensors")):
        time.sleep(0.05)
    assert list(snapshots.glob("*/snapshots/snapshot-*.safetensors")), "no snapshot before the deadline"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not list(snapshots.glob("*/generator/generator.safetensors"))

    proc = _cli(killed)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert "resuming from its snapshot at" in out
    assert _exported_sha(killed) == _exported_sha(straight)


@pytest.mark.slow
def test_torchrun_two_processes_train_what_one_process_trains(tmp_path):
    from embedding.stylegan2 import load_generator

    one = _workspace(tmp_path / "one", kimg=0.032, slices=2)
    proc = _cli(one)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    two = _workspace(tmp_path / "two", kimg=0.032, slices=2)
    torchrun = Path(sys.executable).parent / "torchrun"
    proc = _cli(two, launcher=(str(torchrun), "--standalone", "--nproc_per_node", "2"))
    out2, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out2
    assert out2.count("generator training ") == 1   # one process reports
    (a,) = (one / "generators" / "runs").glob("*/generator")
    (b,) = (two / "generators" / "runs").glob("*/generator")
    assert a.parent.name == b.parent.name
    Ga, _ = load_generator(a)
    Gb, _ = load_generator(b)
    for (name, x), (_, y) in zip(Ga.state_dict().items(), Gb.state_dict().items(), strict=True):
        assert torch.allclose(x, y, rtol=1e-4, atol=2e-5), name


def test_gpu_benchmark_script_runs_on_cpu(tmp_path, capsys):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import generator_train_gpu
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    out = tmp_path / "bench.json"
    rc = generator_train_gpu.main(["--device", "cpu", "--resolutions", "8", "--channel-max", "8", "--batch", "4",
                                   "--iterations", "2", "--warmup", "1", "--out", str(out)])
    assert rc == 0
    import json

    row = json.loads(out.read_text())["rows"][0]
    assert row["resolution"] == 8 and row["iterations"] == 2 and row["kimg_per_s"] > 0
    assert "| 8 | 4 |" in capsys.readouterr().out


@pytest.mark.gpu
def test_training_runs_on_cuda_with_mixed_precision():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from embedding.stylegan2.generator import GeneratorConfig
    from embedding.stylegan2.training import Trainer, TrainingConfig

    trainer = Trainer(TrainingConfig(batch_size=8, device="cuda", mixed_precision=True, ada_mode="fixed", ada_p=0.2,
                                     r1_interval=2, pl_interval=2),
                      GeneratorConfig(resolution=32, channel_base=1024, channel_max=64, mapping_layers=2))
    reals = torch.rand(16, 3, 32, 32, device="cuda") * 2 - 1
    for _ in range(4):
        stats = trainer.train_step(reals)
    assert all(np.isfinite(stats[k]) for k in ("loss_g", "loss_d"))
    assert next(trainer.G_ema.parameters()).device.type == "cuda"


def test_load_images_keeps_good_files_and_names_bad_ones(tmp_path):
    from embedding.stylegan2.photos import load_images, photo_files

    Image.fromarray(np.full((16, 16, 3), 255, np.uint8)).save(tmp_path / "white.png")
    Image.fromarray(np.zeros((16, 8, 3), np.uint8)).save(tmp_path / "wide.png")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("ignored")
    files = photo_files(tmp_path)
    assert [f.name for f in files] == ["broken.jpg", "white.png", "wide.png"]
    images, failures = load_images(files, resolution=8)
    assert images.shape == (1, 3, 8, 8) and torch.allclose(images, torch.ones_like(images))
    reasons = dict(failures)
    assert "not a readable image" in reasons[str(tmp_path / "broken.jpg")]
    assert "square aligned photos" in reasons[str(tmp_path / "wide.png")]
    with pytest.raises(FileNotFoundError, match="run `facesurv align` first"):
        photo_files(tmp_path / "nope")
    with pytest.raises(ValueError, match="resolution must be a whole number >= 4"):
        load_images(files, resolution=2)


def test_monitor_grid_and_kid_are_fixed_by_their_seed():
    from embedding.kid import perceptual_features
    from embedding.perceptual import load_perceptual
    from embedding.stylegan2 import Generator, GeneratorConfig
    from embedding.stylegan2.monitor import fixed_latents, generate, generator_kid, image_grid

    G = Generator(GeneratorConfig(**{k: v for k, v in GEN.items()}), seed=1).eval()
    z = fixed_latents(5, G.z_dim, seed=3)
    assert torch.equal(z, fixed_latents(5, G.z_dim, seed=3)) and not torch.equal(z, fixed_latents(5, G.z_dim, seed=4))
    images = generate(G, z, batch_size=2)
    assert images.shape == (5, 3, 8, 8)
    grid = image_grid(images, columns=2)
    assert grid.shape == (24, 16, 3) and grid.dtype == np.uint8
    assert not grid[16:, 8:].any()  # the sixth cell is padding
    net, _ = load_perceptual("stlpips", None, resize=64)
    real = perceptual_features(net, images)
    a = generator_kid(G, net, real, n_fake=6, seed=9, subsets=3, subset_size=4)
    b = generator_kid(G, net, real, n_fake=6, seed=9, subsets=3, subset_size=4)
    assert a == b and a.n_fake == 6 and a.subset_size == 4
    with pytest.raises(ValueError, match=r"images must be \(N, 3, R, R\)"):
        image_grid(images[:, :1])


@pytest.mark.parametrize("pad", [0, 1, 2])
def test_blur_by_shifts_equals_the_depthwise_convolution(pad):
    import torch.nn.functional as F

    from embedding.stylegan2.layers import blur2d

    x = torch.randn(2, 3, 9, 7, generator=torch.Generator().manual_seed(0))
    f = torch.tensor([1.0, 3.0, 3.0, 1.0])
    for fir in (torch.outer(f, f) / 64, torch.rand(4, 4, generator=torch.Generator().manual_seed(1))):
        want = F.conv2d(x.reshape(6, 1, 9, 7), (fir * 4.0)[None, None], padding=pad).reshape(2, 3, 9 + 2 * pad - 3,
                                                                                             7 + 2 * pad - 3)
        assert torch.allclose(blur2d(x, fir, gain=4.0, pad=pad), want, atol=1e-5)
