"""Training beyond one process: 2 gloo processes give what 1 process gives with the same total batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process(tmp_path):
    sys.path.insert(0, str(HERE))
    try:
        import ddp_worker
    finally:
        sys.path.remove(str(HERE))
    import torch

    iterations = 4   # R1, path length and ADA's controller all run
    threads = torch.get_num_threads()
    try:
        one = ddp_worker.train(iterations)
        init = ddp_worker.train(0)
    finally:
        torch.set_num_threads(threads)

    port = str(_free_port())
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
               "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, str(HERE / "ddp_worker.py"), str(tmp_path / "two.npz"),
                                       str(iterations)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    two = dict(np.load(tmp_path / "two.npz"))
    assert set(two) == set(one)
    # the same sums in another order (gloo's all-reduce): equal to float rounding, which Adam's
    # normalised steps carry to about 1e-6 after a few iterations
    for key in one:
        assert np.allclose(one[key], two[key], rtol=1e-4, atol=2e-5), key
    assert float(one["p"]) == float(two["p"]) > 0  # the controller moved, from both processes' logits
    assert any(not np.allclose(init[k], one[k]) for k in one if k.startswith("G_ema."))


def test_slices_must_divide_the_batch_and_suit_the_processes():
    from embedding.stylegan2.training import TrainingConfig

    with pytest.raises(ValueError, match=r"batch_size \(6\) must be a multiple of slices \(4\)"):
        TrainingConfig(batch_size=6, slices=4)
    with pytest.raises(ValueError, match="slices must be a whole number >= 1"):
        TrainingConfig(slices=0)
