"""A failing rank ends the whole 2-process job with a non-zero exit and that rank's error, in
bounded time: when it raises (on rank 1, or on rank 0 which serves the job's store) and when it
hangs (its peer stops at the sync timeout instead of waiting in a collective)."""

from __future__ import annotations

import pytest
from launching import base_cfg, run_worker

pytestmark = pytest.mark.slow  # two-process paddle.distributed.launch runs

BOUND_S = 60.0


@pytest.mark.parametrize(("mode", "rank"), [("raise", 1), ("raise", 0), ("hang", 1)])
def test_distributed_failing_rank_ends_the_job(tiny_ckpt, tmp_path, mode, rank):
    cfg = base_cfg(tiny_ckpt, tmp_path / "out", prompts_per_step=1, max_steps=3, sync_timeout=10.0)
    spec = {"runs": [{"cfg": cfg, "dump": str(tmp_path / "dump"), "fail": {"rank": rank, "step": 1, "mode": mode}}]}
    done = run_worker(spec, tmp_path, "job", world=2, timeout=3 * BOUND_S)
    assert done.returncode != 0, done.output[-3000:]
    assert done.seconds < BOUND_S, f"took {done.seconds:.1f} s"
    if mode == "raise":
        # The launcher reports the failed rank's log: the original error, not a collective timeout.
        assert f"injected failure on rank {rank} at step 1" in done.output
        assert f"Container rank {rank} status failed" in done.output
    else:
        peer = 1 - rank
        assert f"rank(s) [{rank}] did not reach sync point" in done.worker_log(peer)
        assert "SyncTimeoutError" in done.output
    assert not (tmp_path / f"dump.rank{1 - rank}.npz").exists()  # the healthy rank did not finish either
