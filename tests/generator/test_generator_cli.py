"""`facesurv generator import|info|sample`: prints config + sha256; bad files end in one line."""

from __future__ import annotations

import os
import pickle

import pytest

from facesurv.cli import main


def _run(capsys, *args):
    rc = main(list(args))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_import_nvidia_pickle_prints_config_and_sha(tiny_G, tmp_path, monkeypatch, capsys, layouts):
    (tmp_path / "net.pkl").write_bytes(layouts.nvidia_pickle_bytes(tiny_G, monkeypatch))
    rc, out, err = _run(capsys, "generator", "import", str(tmp_path / "net.pkl"), "--out", str(tmp_path / "g"))
    assert rc == 0, err
    from embedding.stylegan2.store import sha256_file

    sha = sha256_file(tmp_path / "g" / "generator.safetensors")
    assert f"sha256: {sha}" in out
    assert "resolution: 16" in out and "channel_base: 128" in out and "mapping_layers: 3" in out
    assert "num_ws: 6" in out and "NVIDIA stylegan2-ada-pytorch pickle" in out
    rc, out2, err = _run(capsys, "generator", "info", str(tmp_path / "g"))
    assert rc == 0 and f"sha256: {sha}" in out2


def test_info_on_workspace_says_random_init(workspace, capsys):
    rc, out, err = _run(capsys, "generator", "info", "--workspace", str(workspace.root))
    assert rc == 0, err
    assert "source: random-init:seed=0" in out and "channel_max: 32" in out
    assert "random-init stand-in generator (seed 0): no pretrained StyleGAN2 weights were provided" in err


def test_sample_writes_png(workspace, tmp_path, capsys):
    from PIL import Image

    rc, out, err = _run(capsys, "generator", "sample", "--out", str(tmp_path / "s.png"), "--count", "4",
                        "--workspace", str(workspace.root))
    assert rc == 0, err
    assert Image.open(tmp_path / "s.png").size == (64, 64)
    assert "random-init stand-in" in err


class _Evil:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


@pytest.mark.parametrize("kind", ["not_a_pickle", "truncated", "malicious", "missing"])
def test_bad_files_give_one_line_errors(kind, tiny_G, tmp_path, monkeypatch, capsys, layouts):
    marker = tmp_path / "pwned"
    path = tmp_path / "in.pkl"
    if kind == "not_a_pickle":
        path.write_text("just text\n")
        match = "not a pickle file"
    elif kind == "truncated":
        path.write_bytes(layouts.nvidia_pickle_bytes(tiny_G, monkeypatch)[:5000])
        match = "not a readable pickle"
    elif kind == "malicious":
        path.write_bytes(pickle.dumps({"G_ema": _Evil(f"touch {marker}")}))
        match = "refused to load: the pickle references"
    else:
        match = "generator checkpoint not found"
    rc, out, err = _run(capsys, "generator", "import", str(path), "--out", str(tmp_path / "g"))
    assert rc != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "g").exists() and not marker.exists()


def test_relative_checkpoint_resolves_against_workspace(workspace, tiny_G, capsys):
    from embedding.stylegan2 import save_generator

    sha = save_generator(tiny_G, workspace.root / "generators" / "tiny")
    p = workspace.root / "params.yaml"
    text = p.read_text()
    assert "  checkpoint: null" in text
    p.write_text(text.replace("  checkpoint: null", "  checkpoint: generators/tiny", 1))
    rc, out, err = _run(capsys, "generator", "info", "--workspace", str(workspace.root))
    assert rc == 0, err
    assert f"sha256: {sha}" in out and "random-init" not in err


def test_params_reject_channel_base_below_resolution(workspace):
    from ground.config import load_params
    from ground.errors import ConfigError

    p = workspace.root / "params.yaml"
    p.write_text(p.read_text().replace("  channel_base: 32768", "  channel_base: 16", 1))
    with pytest.raises(ConfigError, match=r"generator.channel_base must be >= generator.resolution \(32\)"):
        load_params(p)
