"""The training loop (issue #15): one iteration's effects, exact resume from snapshots, ADA modes,
fine-tuning starts, config validation and the export of G_ema. Tiny networks on CPU."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch

from embedding.stylegan2 import Generator, GeneratorConfig
from embedding.stylegan2.discriminator import Discriminator, DiscriminatorConfig
from embedding.stylegan2.snapshots import latest_snapshot, read_snapshot
from embedding.stylegan2.store import StoreError, read_generator_file
from embedding.stylegan2.training import Trainer, TrainingConfig, export_generator, train

G_CFG = GeneratorConfig(z_dim=32, w_dim=32, mapping_layers=2, resolution=8, channel_base=64, channel_max=16)
# Short intervals so a handful of iterations exercises every branch, and resumes land mid-interval.
CFG = TrainingConfig(batch_size=4, total_kimg=0.02, r1_gamma=1.0, r1_interval=2, pl_interval=3, ada_mode="ada",
                     ada_p=0.3, ada_interval=2, ada_speed_kimg=0.05, snapshot_kimg=0.008, seed=3)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tensors this small gain nothing from threads, and the CI box's two CPUs are shared.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data() -> torch.Tensor:
    return torch.rand(24, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1


def _states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _steps(trainer: Trainer, data: torch.Tensor, n: int) -> list[dict[str, float]]:
    return [trainer.train_step(data) for _ in range(n)]


# --- one run ------------------------------------------------------------------------------------------

def test_smoke_run_trains_every_network_and_counts_images(data) -> None:
    trainer = Trainer(CFG, G_CFG)
    G0, D0 = copy.deepcopy(trainer.G), copy.deepcopy(trainer.D)
    assert _states_equal(trainer.G_ema, trainer.G)
    stats = _steps(trainer, data, 6)
    for i, s in enumerate(stats):
        assert math.isfinite(s["loss_g"]) and math.isfinite(s["loss_d"])
        assert s["kimg"] == pytest.approx((i + 1) * 4 / 1000) and s["iteration"] == i + 1
        # lazy regularisers: on iterations 0, 2, 4 (R1) and 0, 3 (path length) only
        assert math.isfinite(s["r1"]) == (i % 2 == 0)
        assert math.isfinite(s["pl"]) == (i % 3 == 0)
    assert trainer.nimg == 24 and trainer.iteration == 6
    assert not _states_equal(trainer.G, G0) and not _states_equal(trainer.D, D0)
    assert not _states_equal(trainer.G_ema, trainer.G)  # a 10-kimg half-life lags behind G
    assert not _states_equal(trainer.G_ema, G0)
    assert float(trainer.pl_mean) > 0
    assert trainer.G.random_init_seed is None and trainer.G_ema.random_init_seed is None


def test_ema_kimg_zero_makes_G_ema_a_copy_of_G(data) -> None:
    trainer = Trainer(dataclasses.replace(CFG, ema_kimg=0.0), G_CFG)
    _steps(trainer, data, 2)
    assert _states_equal(trainer.G_ema, trainer.G)


def test_same_seed_same_run_other_seed_other_run(data) -> None:
    a, b, c = Trainer(CFG, G_CFG), Trainer(CFG, G_CFG), Trainer(dataclasses.replace(CFG, seed=4), G_CFG)
    for t in (a, b, c):
        _steps(t, data, 2)
    assert _states_equal(a.G, b.G) and _states_equal(a.D, b.D)
    assert not _states_equal(a.G, c.G)


def test_callable_dataset_gets_batch_size_and_the_trainers_generator(data) -> None:
    calls = []

    def sample(n: int, gen: torch.Generator) -> torch.Tensor:
        calls.append((n, gen))
        return data[torch.randint(len(data), (n,), generator=gen)]

    trainer = Trainer(CFG, G_CFG)
    _steps(trainer, sample, 2)
    assert calls == [(4, trainer.rng), (4, trainer.rng)]


@pytest.mark.parametrize("bad, match", [
    (torch.zeros(4, 3, 16, 16), "generator makes 3x8x8 .resolution 8."),
    (torch.zeros(4, 1, 8, 8), "generator makes 3x8x8"),
    (torch.full((4, 3, 8, 8), 200.0), r"in \[-1, 1\].*127.5"),
    (torch.zeros(4, 3, 8, 8, dtype=torch.uint8), "float"),
])
def test_bad_dataset_is_refused_with_a_fix(bad, match) -> None:
    with pytest.raises(ValueError, match=match):
        Trainer(CFG, G_CFG).train_step(bad)


def test_callable_returning_the_wrong_batch_size_is_refused() -> None:
    with pytest.raises(ValueError, match="holds 2 images, batch_size is 4"):
        Trainer(CFG, G_CFG).train_step(lambda n, gen: torch.zeros(2, 3, 8, 8))


# --- snapshots and resume -----------------------------------------------------------------------------

def _assert_same_run(a: Trainer, b: Trainer) -> None:
    for name in ("G", "G_ema", "D"):
        assert _states_equal(getattr(a, name), getattr(b, name)), name
    assert a.controller.p == b.controller.p and a.controller.state_dict() == b.controller.state_dict()
    assert torch.equal(a.pl_mean, b.pl_mean) and torch.equal(a.rng.get_state(), b.rng.get_state())
    assert (a.iteration, a.nimg) == (b.iteration, b.nimg)
    for oa, ob in ((a.opt_g, b.opt_g), (a.opt_d, b.opt_d)):
        sa, sb = oa.state_dict()["state"], ob.state_dict()["state"]
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[i][k], sb[i][k]) for i in sa for k in sa[i])


def test_resume_continues_bit_for_bit(data, tmp_path) -> None:
    straight = Trainer(CFG, G_CFG)
    _steps(straight, data, 5)

    first = Trainer(CFG, G_CFG)
    _steps(first, data, 3)  # mid-interval for R1, path length and ADA
    first.save_snapshot(tmp_path)
    del first  # the "crash"
    resumed = Trainer.resume(tmp_path)
    assert resumed.iteration == 3 and resumed.nimg == 12
    _steps(resumed, data, 2)
    _assert_same_run(straight, resumed)
    assert straight.controller.p != CFG.ada_p  # the controller did move, so equal p means something


def test_train_writes_snapshots_and_a_killed_run_resumes_exactly(data, tmp_path) -> None:
    straight = Trainer(CFG, G_CFG)
    seen: list[dict[str, float]] = []
    last = train(straight, data, snapshot_dir=tmp_path / "a", progress=seen.append)  # total_kimg 0.02: 5 steps
    assert [s["iteration"] for s in seen] == [1, 2, 3, 4, 5] and last == seen[-1]
    # every 0.008 kimg = 2 iterations, plus the end
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "snapshot-000000002.safetensors", "snapshot-000000004.safetensors", "snapshot-000000005.safetensors"]

    killed = Trainer(CFG, G_CFG)
    train(killed, data, kimg=0.012, snapshot_dir=tmp_path / "b")  # stops after iteration 3
    resumed = Trainer.resume(tmp_path / "b")
    assert resumed.iteration == 3
    assert train(resumed, data, snapshot_dir=tmp_path / "b")["iteration"] == 5
    _assert_same_run(straight, resumed)
    assert train(resumed, data, snapshot_dir=tmp_path / "b") == {}  # nothing left to do


def test_resume_ignores_a_half_written_snapshot(data, tmp_path) -> None:
    trainer = Trainer(CFG, G_CFG)
    _steps(trainer, data, 1)
    trainer.save_snapshot(tmp_path)
    # what a kill -9 during write_bytes_atomic leaves behind, plus a look-alike
    (tmp_path / ".snapshot-000000009.safetensors.abc123.tmp").write_bytes(b"\x00" * 10)
    (tmp_path / "snapshot-000000009.safetensors.tmp").write_bytes(b"garbage")
    assert latest_snapshot(tmp_path) == tmp_path / "snapshot-000000001.safetensors"
    assert Trainer.resume(tmp_path).iteration == 1


def test_resume_without_a_snapshot_says_so(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no snapshot-.*start a new run"):
        Trainer.resume(tmp_path)
    with pytest.raises(FileNotFoundError, match="no snapshot"):
        Trainer.resume(tmp_path / "missing")


def test_snapshot_is_pickle_free_safetensors_and_checked_on_load(data, tmp_path) -> None:
    trainer = Trainer(CFG, G_CFG)
    _steps(trainer, data, 1)
    path = trainer.save_snapshot(tmp_path)
    tensors, state = read_snapshot(path)
    assert tensors["rng"].dtype == torch.uint8 and "opt_g.0.exp_avg" in tensors and "opt_d.0.exp_avg_sq" in tensors
    assert state["iteration"] == 1 and state["controller"]["p"] == trainer.controller.p
    other = Trainer(dataclasses.replace(CFG, r1_gamma=2.0), G_CFG)
    with pytest.raises(StoreError, match="r1_gamma"):
        other.load_snapshot(path)
    bigger = Trainer(CFG, dataclasses.replace(G_CFG, channel_max=32))
    with pytest.raises(StoreError, match="generator_config"):
        bigger.load_snapshot(path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(StoreError):
        Trainer.resume(tmp_path)


# --- ADA modes ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode, p0", [("off", 0.0), ("fixed", 0.3), ("ada", 0.3)])
def test_ada_modes(mode, p0, data, monkeypatch) -> None:
    import embedding.augment.controller as controller_module

    calls = []
    real_augment = controller_module.augment

    def counting(images, **kw):
        calls.append(kw["p"])
        return real_augment(images, **kw)

    monkeypatch.setattr(controller_module, "augment", counting)
    trainer = Trainer(dataclasses.replace(CFG, ada_mode=mode, ada_p=p0), G_CFG)
    stats = _steps(trainer, data, 4)
    if mode == "off":
        assert calls == [] and all(s["p"] == 0.0 for s in stats)
    elif mode == "fixed":
        assert calls and set(calls) == {0.3} and all(s["p"] == 0.3 for s in stats)
    else:
        assert calls and trainer.controller.p != 0.3 and len({s["p"] for s in stats}) > 1
    # r_t is measured in every mode, from the end of the first ADA interval (2 iterations) on
    assert [math.isfinite(s["r_t"]) for s in stats] == [False, True, True, True]


# --- starts -------------------------------------------------------------------------------------------

def test_fine_tune_starts_from_the_given_generator(tiny_G, data) -> None:
    before = copy.deepcopy(tiny_G.state_dict())
    config = dataclasses.replace(CFG, seed=5)
    trainer = Trainer(config, tiny_G)
    assert _states_equal(trainer.G, tiny_G) and _states_equal(trainer.G_ema, tiny_G)
    assert trainer.D.config == DiscriminatorConfig.for_generator(tiny_G.config)
    data16 = torch.nn.functional.interpolate(data, size=16, mode="nearest")
    _steps(trainer, data16, 1)
    assert not _states_equal(trainer.G, tiny_G)
    assert all(torch.equal(before[k], v) for k, v in tiny_G.state_dict().items())  # the caller's G untouched


def test_given_discriminator_is_used_and_must_fit(tiny_G) -> None:
    D = Discriminator(DiscriminatorConfig.for_generator(tiny_G.config), seed=9)
    trainer = Trainer(CFG, tiny_G, discriminator=D)
    assert _states_equal(trainer.D, D) and trainer.D is not D
    with pytest.raises(ValueError, match="for_generator"):
        Trainer(CFG, tiny_G, discriminator=Discriminator(DiscriminatorConfig.for_generator(G_CFG), seed=0))
    with pytest.raises(TypeError, match="GeneratorConfig"):
        Trainer(CFG, "G.pkl")  # type: ignore[arg-type]


def test_from_scratch_uses_the_seeded_init() -> None:
    trainer = Trainer(CFG, G_CFG)
    assert _states_equal(trainer.G, Generator(G_CFG, seed=CFG.seed))
    assert trainer.G_ema.random_init_seed == CFG.seed


# --- config -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("batch_size", 0), ("batch_size", 2.0), ("total_kimg", 0), ("g_lr", -1e-3), ("d_lr", math.nan),
    ("betas", (0.0, 1.0)), ("betas", (0.9,)), ("r1_gamma", -1.0), ("r1_interval", 0), ("pl_weight", -2.0),
    ("pl_interval", 0), ("pl_decay", 1.5), ("pl_batch_shrink", 0), ("style_mixing_prob", 1.1),
    ("ema_kimg", -1.0), ("ada_mode", "auto"), ("ada_target", 1.0), ("ada_p", 1.0), ("ada_speed_kimg", 0),
    ("ada_interval", 0), ("augment_ops", "zzz"), ("augment_ops", ["b"]), ("snapshot_kimg", 0), ("seed", -1),
    ("device", "tpu:x"), ("mixed_precision", "yes"),
])
def test_bad_config_names_the_field(field, value) -> None:
    with pytest.raises(ValueError, match=field):
        TrainingConfig(**{field: value})


def test_ada_p_must_be_zero_when_off_and_config_round_trips() -> None:
    with pytest.raises(ValueError, match="ada_p must be 0 when ada_mode is 'off'"):
        TrainingConfig(ada_mode="off", ada_p=0.2)
    assert TrainingConfig.from_dict(CFG.to_dict()) == CFG
    with pytest.raises(ValueError, match="unknown training config keys: lr"):
        TrainingConfig.from_dict({"lr": 0.1})


# --- export -------------------------------------------------------------------------------------------

def test_export_generator_writes_G_ema_in_the_project_format(data, tmp_path) -> None:
    trainer = Trainer(CFG, G_CFG)
    _steps(trainer, data, 2)
    sha = export_generator(trainer, tmp_path)
    G, sha_read = read_generator_file(tmp_path)
    assert sha_read == sha and len(sha) == 64
    assert _states_equal(G, trainer.G_ema) and not _states_equal(G, trainer.G)
    assert G.random_init_seed is None and G.config == G_CFG
    assert export_generator(trainer, tmp_path / "again") == sha  # deterministic


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_device_without_cuda_is_refused() -> None:
    with pytest.raises(ValueError, match="CUDA is not available here; use device='cpu'"):
        Trainer(dataclasses.replace(CFG, device="cuda", mixed_precision=True), G_CFG)
