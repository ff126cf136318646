"""Multi-process training on one machine: 2 processes x 2 CPU devices (gloo over 127.0.0.1)
give the losses of 1 process x 4 devices, and a SIGTERM to one process stops both after the
same step with one checkpoint.

The same run by hand: ``experiments/multiprocess_demo.sh``.
"""

import os
import signal

import numpy as np
import pytest
import train_helpers as h

RUN = h.RUN
STEPS = RUN["num_steps"]


@pytest.mark.slow
def test_two_processes_match_one_and_stop_together(tmp_path, tmp_path_factory):
    cache_env = h.compilation_cache_env(tmp_path_factory)  # the single-process run's programs, for later modules
    port = h.free_port()
    mp_dir, ref_dir = tmp_path / "two_processes", tmp_path / "one_process"
    distributed = ["--coordinator_address", f"127.0.0.1:{port}", "--num_processes", "2", "--distributed_timeout", "120"]
    # No persistent cache for these two: one process loading a program the other compiles runs ahead,
    # and gloo gives up when its peer is over 30 s late for the first collective.
    no_cache = {"JAX_ENABLE_COMPILATION_CACHE": "false"}
    procs = [h.start(mp_dir, *distributed, "--process_id", str(p), devices=2, env=no_cache, **RUN) for p in range(2)]
    reference = h.start(ref_dir, devices=4, env=cache_env, **RUN)  # uninterrupted
    try:
        lines = h.wait_for_line(procs[0], "step 2/")
        procs[1].send_signal(signal.SIGTERM)  # only one process is told; both must stop after the same step
        (code0, out0), (code1, out1) = h.finish(procs[0]), h.finish(procs[1])
        ref_code, ref_out = h.finish(reference)
    finally:
        for p in procs + [reference]:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert any("4 cpu device(s), 2 process(es), global batch 8" in line for line in lines), "".join(lines)
    assert code0 == 0 and code1 == 0, out0[-3000:] + out1[-3000:]
    assert ref_code == 0, ref_out[-3000:]
    assert "received SIGTERM: saved a checkpoint at step" in out0  # process 0 reports the agreed stop
    stopped = int(out0.split("saved a checkpoint at step ")[1].split()[0])
    assert 3 <= stopped < STEPS
    assert str(stopped) in os.listdir(mp_dir / "checkpoints")
    assert not os.path.exists(mp_dir / "eval.json")

    two, one = h.logged_losses(mp_dir), h.logged_losses(ref_dir)
    assert sorted(two) == list(range(1, stopped + 1))  # only process 0 logs, once per step
    assert sorted(one) == list(range(1, STEPS + 1))
    np.testing.assert_allclose([two[s] for s in range(1, stopped + 1)], [one[s] for s in range(1, stopped + 1)],
                               rtol=1e-5)
