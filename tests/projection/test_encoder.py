"""The encoder that starts projections: training, persistence, project(init=...) and the batch driver."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch

from embedding.encoder import (
    ENCODER_FILE,
    Encoder,
    EncoderConfig,
    EncoderInfo,
    encode,
    encoder_from_bytes,
    encoder_to_bytes,
    load_encoder,
    read_encoder_file,
    save_encoder,
    train_encoder,
)
from embedding.project_batch import SHARD_FORMAT, PhotoInput, Projection, project_photos
from embedding.projection import latent_statistics, project, stable_seed
from embedding.stylegan2.store import StoreError, dumps_safetensors, loads_safetensors

from .conftest import FAST

TRAIN = dict(steps=150, batch_size=16, learning_rate=3e-3, seed=0, holdout_samples=32, pixel_weight=0.5)
SETTINGS = dict(space="w", loss="mse", **FAST)


@pytest.fixture(scope="module")
def stats(tiny_generator):
    return latent_statistics(tiny_generator[0], samples=FAST["w_avg_samples"])


@pytest.fixture(scope="module")
def trained(tiny_generator, stats):
    """(Encoder, metrics, EncoderInfo) of a w encoder trained for the tiny generator (a few seconds)."""
    G, info = tiny_generator
    E, metrics = train_encoder(G, stats=stats, space="w", **TRAIN)
    blob = encoder_to_bytes(E, generator_sha256=info.sha256, training=metrics)
    enc_info = EncoderInfo(sha256=hashlib.sha256(blob).hexdigest(), generator_sha256=info.sha256, space="w",
                           source="test", steps=metrics["steps"])
    return E, metrics, enc_info


@pytest.fixture(scope="module")
def own_samples(tiny_generator):
    """(8, 3, 16, 16) images G made from fresh z (a seed the training never drew), clipped as photos are."""
    G, _ = tiny_generator
    z = torch.randn(8, G.z_dim, generator=torch.Generator().manual_seed(99))
    with torch.no_grad():
        return G.synthesis(G.mapping(z, update_w_avg=False), noise_mode="const").clamp(-1, 1)


def test_encoder_shapes_and_a_new_encoder_answers_the_mean():
    config = EncoderConfig(resolution=16, space="w", latent_dim=512, width=4, channel_max=8, hidden=32)
    assert config.channels() == [8, 8, 8]                  # 4 * 64 / r, capped
    E = Encoder(config, seed=1)
    mean = torch.randn(512, generator=torch.Generator().manual_seed(0))
    E.set_latent_frame(mean, 0.5)
    out = E(torch.zeros(3, 3, 16, 16))
    assert out.shape == (3, 512)
    assert torch.equal(out, mean.expand(3, -1))            # zero head: an untrained encoder starts at w_avg
    assert EncoderConfig(resolution=512, space="z", latent_dim=512).channels() == [8, 16, 32, 64, 128, 256, 256, 256]
    with pytest.raises(ValueError, match="space must be 'w' or 'z'"):
        EncoderConfig(resolution=16, space="w+", latent_dim=512)
    with pytest.raises(ValueError, match="resolution must be a power of two"):
        EncoderConfig(resolution=24, space="w", latent_dim=512)


def test_encode_checks_its_input(trained):
    E = trained[0]
    with pytest.raises(ValueError, match=r"must be \(N, 3, 16, 16\) to match the encoder"):
        encode(E, torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"scaled to \[-1, 1\]"):
        encode(E, torch.full((1, 3, 16, 16), 2.0))
    with pytest.raises(ValueError, match="NaN or infinite"):
        encode(E, torch.full((1, 3, 16, 16), float("nan")))


def test_training_reduces_the_held_out_latent_error(tiny_generator, trained):
    E, m, _ = trained
    # before training the encoder answers w_avg, which scores about 1 by construction. A random-init
    # 16-channel generator shows only a few of w's 512 directions in its 16 px images, so the
    # latent error cannot fall far (measured 0.95 of the start); the image error does (0.26)
    assert 0.9 < m["initial_holdout_latent_error"] < 1.2
    assert m["holdout_latent_error"] < 0.97 * m["initial_holdout_latent_error"]
    assert m["holdout_pixel_mse"] < 0.5 * m["initial_holdout_pixel_mse"]
    assert m["steps"] == TRAIN["steps"] and np.isfinite(m["final_loss"])
    json.dumps(m)                                           # the training record goes into the file as JSON


def test_training_is_seeded_and_leaves_the_generator_alone(tiny_generator, stats):
    G, _ = tiny_generator
    before = {k: v.clone() for k, v in G.state_dict().items()}
    was_training = G.training
    G.train()                                               # even in training mode w_avg must not move
    try:
        kw = dict(stats=stats, steps=3, batch_size=4, holdout_samples=4, pixel_weight=1.0, width=2, hidden=16)
        a, ma = train_encoder(G, **kw)
        b, mb = train_encoder(G, **kw)
        c, _ = train_encoder(G, **{**kw, "seed": 1})
        z, mz = train_encoder(G, **{**kw, "space": "z"})
    finally:
        G.train(was_training)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items()) and ma == mb
    assert not all(torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())
    assert z.config.space == "z" and z.config.latent_dim == G.z_dim and np.isfinite(mz["holdout_latent_error"])
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())
    assert all(p.grad is None for p in G.parameters())


def test_bytes_round_trip_gives_the_same_encoder(tiny_generator, trained, own_samples, tmp_path):
    E, m, _ = trained
    sha = tiny_generator[1].sha256
    blob = encoder_to_bytes(E, generator_sha256=sha, training=m)
    assert blob == encoder_to_bytes(E, generator_sha256=sha, training=m)       # deterministic
    F, meta = encoder_from_bytes(blob, where="mem")
    assert torch.equal(encode(F, own_samples), encode(E, own_samples))
    assert meta["generator_sha256"] == sha and meta["training"] == m and meta["config"] == E.config.to_dict()
    file_sha = save_encoder(E, tmp_path / "enc", generator_sha256=sha, training=m)
    for where in (tmp_path / "enc", tmp_path / "enc" / ENCODER_FILE):
        G2, sha2, _ = read_encoder_file(where)
        assert sha2 == file_sha == hashlib.sha256(blob).hexdigest()
        assert torch.equal(encode(G2, own_samples), encode(E, own_samples))
    _, info = load_encoder(tmp_path / "enc")
    assert (info.sha256, info.generator_sha256, info.space, info.steps) == (file_sha, sha, "w", m["steps"])
    with pytest.raises(StoreError, match="no encoder.safetensors here"):
        read_encoder_file(tmp_path)
    with pytest.raises(ValueError, match="generator_sha256 must be 64 lowercase hex"):
        encoder_to_bytes(E, generator_sha256="abc", training=m)
    with pytest.raises(ValueError, match="training must be a JSON-serialisable"):
        encoder_to_bytes(E, generator_sha256=sha, training={"x": object()})


def test_a_damaged_or_foreign_file_is_refused(tiny_generator, trained, tmp_path):
    E, m, _ = trained
    blob = encoder_to_bytes(E, generator_sha256=tiny_generator[1].sha256, training=m)
    with pytest.raises(StoreError, match="truncated"):
        encoder_from_bytes(blob[:-100], where="cut.safetensors")
    tensors, meta = loads_safetensors(blob)

    def rewrite(t=tensors, **changes):
        return dumps_safetensors(t, {**meta, **changes})

    with pytest.raises(StoreError, match="not a facesurv encoder file"):
        encoder_from_bytes(rewrite(format="facesurv-stylegan2"), where="g")
    with pytest.raises(StoreError, match="generator sha256 in the file is missing or malformed"):
        encoder_from_bytes(rewrite(generator_sha256="x"), where="g")
    with pytest.raises(StoreError, match="unknown encoder config keys: depth"):
        encoder_from_bytes(rewrite(config=json.dumps({**E.config.to_dict(), "depth": 3})), where="g")
    with pytest.raises(StoreError, match=r"tensor fc.weight has shape .* needs"):
        encoder_from_bytes(rewrite(config=json.dumps({**E.config.to_dict(), "hidden": 7})), where="g")
    with pytest.raises(StoreError, match=r"missing 1 tensors \(e.g. out.bias\)"):
        encoder_from_bytes(rewrite({k: v for k, v in tensors.items() if k != "out.bias"}), where="g")
    bad = dict(tensors, **{"out.bias": torch.full_like(tensors["out.bias"], float("nan"))})
    with pytest.raises(StoreError, match="NaN or infinite"):
        encoder_from_bytes(rewrite(bad), where="g")
    (tmp_path / ENCODER_FILE).write_bytes(b"\x00" * 4)
    with pytest.raises(StoreError, match="too short"):
        read_encoder_file(tmp_path)


@pytest.mark.parametrize("space", ["w", "z", "w+"])
def test_zero_steps_return_the_start_exactly(tiny_generator, rendered_photos, space):
    G, _ = tiny_generator
    _, img = rendered_photos
    dim = G.z_dim if space == "z" else G.w_dim
    init = torch.randn(3, dim, generator=torch.Generator().manual_seed(4))
    res = project(G, img[:3], space=space, init=init, **{**FAST, "steps": 0})
    expect = init.numpy() if space != "w+" else np.repeat(init.numpy()[:, None], G.num_ws, axis=1)
    assert np.array_equal(res.latents, expect)
    assert np.array_equal(res.final_loss, res.initial_loss)
    if space == "w+":
        per_layer = torch.randn(3, G.num_ws, dim, generator=torch.Generator().manual_seed(5))
        res = project(G, img[:3], space=space, init=per_layer.numpy(), **{**FAST, "steps": 0})
        assert np.array_equal(res.latents, per_layer.numpy())


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(init=torch.zeros(2, 7)), r"init must be \(2, 512\) for space 'w'"),
    (dict(init=torch.zeros(3, 512)), r"init must be \(2, 512\)"),
    (dict(init=torch.zeros(2, 6, 512)), r"init must be \(2, 512\) for space 'w' "),
    (dict(space="w+", init=torch.zeros(2, 5, 512)), r"init must be \(2, 512\) or \(2, 6, 512\)"),
    (dict(init=torch.full((2, 512), float("inf"))), "init contains NaN or infinite"),
    (dict(steps=0), r"steps must be an integer >= 1 \(or 0 with init="),
    (dict(steps=-1, init=torch.zeros(2, 512)), "steps must be an integer >= 1"),
])
def test_bad_init(tiny_generator, rendered_photos, kwargs, match):
    G, _ = tiny_generator
    _, img = rendered_photos
    with pytest.raises(ValueError, match=match):
        project(G, img[:2], **{**FAST, **kwargs})


def test_encoder_start_beats_w_avg_after_a_few_steps(tiny_generator, trained, stats, own_samples):
    G, _ = tiny_generator
    E = trained[0]
    opts = dict(space="w", loss="mse", stats=stats, w_avg_samples=stats.samples, steps=5, seed=3)
    plain = project(G, own_samples, **opts)
    started = project(G, own_samples, init=encode(E, own_samples), **opts)
    # measured: the start at 0.31 of w_avg's loss, after 5 steps 0.72 of it, 8 photos of 8 better
    assert started.initial_loss.mean() < 0.5 * plain.initial_loss.mean()
    assert started.final_loss.mean() < 0.85 * plain.final_loss.mean()
    assert np.sum(started.final_loss < plain.final_loss) >= 7


def test_a_photo_with_init_does_not_depend_on_its_batch_mates(tiny_generator, trained, rendered_photos):
    G, _ = tiny_generator
    E = trained[0]
    _, img = rendered_photos
    init = encode(E, img[:5])
    assert torch.equal(encode(E, img[[3, 1]]), init[[3, 1]])   # the encoder too: one photo at a time
    seeds = [stable_seed(5, f"photo{i}") for i in range(5)]
    opts = dict(space="w", loss="mse", **{**FAST, "steps": 4})
    all5 = project(G, img[:5], seed=seeds, init=init, **opts)
    pair = project(G, img[[3, 1]], seed=[seeds[3], seeds[1]], init=init[[3, 1]], **opts)
    alone = project(G, img[1:2], seed=[seeds[1]], init=init[1:2], **opts)
    for got, j, i in ((pair, 0, 3), (pair, 1, 1), (alone, 0, 1)):
        assert np.abs(got.latents[j] - all5.latents[i]).max() <= 1e-6
        assert abs(got.mse[j] - all5.mse[i]) <= 1e-6


def test_the_run_key_names_the_encoder_only_when_there_is_one(tiny_generator, trained):
    G, info = tiny_generator
    E, _, enc_info = trained
    plain = Projection(G, info, SETTINGS, seed=0)
    # without an encoder: today's key, byte for byte, so existing shards stay valid
    legacy = json.dumps({"format": SHARD_FORMAT, "generator": info.sha256, "perceptual": None,
                         "settings": plain.provenance["settings"]}, sort_keys=True, default=str)
    assert plain.key == hashlib.sha256(legacy.encode()).hexdigest() and "encoder" not in plain.provenance
    with_enc = Projection(G, info, SETTINGS, seed=0, encoder=E, encoder_info=enc_info)
    other = Projection(G, info, SETTINGS, seed=0, encoder=E, encoder_info=dataclasses.replace(enc_info, sha256="0" * 64))
    assert len({plain.key, with_enc.key, other.key}) == 3
    assert with_enc.provenance["encoder"] == {"sha256": enc_info.sha256, "generator_sha256": info.sha256,
                                              "space": "w", "source": "test", "steps": TRAIN["steps"]}
    assert Projection(G, info, {**SETTINGS, "space": "w+"}, seed=0, encoder=E, encoder_info=enc_info).key


def test_an_encoder_for_another_generator_or_space_is_refused(tiny_generator, trained):
    G, info = tiny_generator
    E, _, enc_info = trained
    with pytest.raises(ValueError, match="trained for generator 0000000000000000..., not this projection's"):
        Projection(G, info, SETTINGS, seed=0, encoder=E,
                   encoder_info=dataclasses.replace(enc_info, generator_sha256="0" * 64))
    with pytest.raises(ValueError, match="a 'w' encoder cannot start a 'z' projection"):
        Projection(G, info, {**SETTINGS, "space": "z"}, seed=0, encoder=E, encoder_info=enc_info)
    with pytest.raises(ValueError, match="an encoder needs its EncoderInfo"):
        Projection(G, info, SETTINGS, seed=0, encoder=E)


def test_encoder_runs_start_from_the_encoder_and_keep_their_own_shards(tiny_generator, trained, rendered_photos,
                                                                      tmp_path):
    from PIL import Image

    G, info = tiny_generator
    E, _, enc_info = trained
    photos = []
    for i in range(2):
        arr = ((rendered_photos[1][i].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
        Image.fromarray(arr, mode="RGB").save(tmp_path / f"p{i}.png")
        photos.append(PhotoInput(f"p{i}", str(tmp_path / f"p{i}.png")))
    seen = []

    def spy(*args, **kwargs):
        seen.append(kwargs.get("init"))
        return project(*args, **kwargs)

    options = type("Options", (), {"project_options": lambda self: dict(SETTINGS), "seed": 0,
                                   "mixed_precision": False})()
    encoded = Projection.configured(options, (G, info), encoder=(E, enc_info), project_fn=spy)
    run = project_photos(encoded, photos, shard_dir=tmp_path / "shards", batch_size=2)
    assert run.projected == 2 and seen[0] is not None and seen[0].shape == (2, G.w_dim)
    assert run.provenance["encoder"]["sha256"] == enc_info.sha256
    plain = project_photos(Projection(G, info, SETTINGS, seed=0, project_fn=spy), photos,
                           shard_dir=tmp_path / "shards", batch_size=2)
    assert plain.reused == 0 and plain.projected == 2 and seen[1] is None
    again = project_photos(encoded, photos, shard_dir=tmp_path / "shards", batch_size=2)
    assert again.reused == 2 and again.projected == 0
