"""In-process tests of the distributed building blocks: sync points and the failure flag (on an
in-memory store, ranks as threads), run_guarded's exit, the rank-aware sampler, per-rank seeds, and
the clear errors of the GPU-only features on CPU."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import pytest
from launching import worker_env

from paddlemix_r1.distributed import Coordinator, PeerFailedError, SyncOrderError, SyncTimeoutError, rank_seed
from paddlemix_r1.grpo.config import GRPOConfig
from paddlemix_r1.grpo.sampler import PromptSampler


class MemoryStore:
    """The subset of Paddle's TCPStore that Coordinator uses, shared by threads."""

    def __init__(self):
        self.data: dict[str, object] = {}
        self.lock = threading.Lock()

    def add(self, key: str, n: int) -> int:
        with self.lock:
            self.data[key] = int(self.data.get(key, 0)) + n
            return self.data[key]

    def set(self, key: str, value: str) -> None:
        with self.lock:
            self.data[key] = value.encode()

    def get(self, key: str) -> bytes:
        with self.lock:
            return self.data[key]


class BrokenStore(MemoryStore):
    def add(self, key: str, n: int) -> int:
        raise ValueError("(InvalidArgument) TCP connection reset by peer.")


def _pair(timeout: float = 5.0, store=None) -> tuple[Coordinator, Coordinator]:
    store = store or MemoryStore()
    return Coordinator(store, 0, 2, timeout), Coordinator(store, 1, 2, timeout)


def _in_thread(fn) -> dict:
    out: dict = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            out["error"] = e

    t = threading.Thread(target=run)
    t.start()
    out["thread"] = t
    return out


def test_distributed_sync_point_waits_for_every_rank():
    c0, c1 = _pair()
    for _ in range(3):  # matching calls pair up by their order
        other = _in_thread(lambda: c1.sync("x"))
        time.sleep(0.05)
        c0.sync("x")
        other["thread"].join(5)
        assert "error" not in other


def test_distributed_sync_points_of_different_names_are_an_error():
    c0, c1 = _pair()
    other = _in_thread(lambda: c1.sync("gradients, step 3"))
    c0.sync("rollout times")
    other["thread"].join(5)
    assert isinstance(other["error"], SyncOrderError)
    assert "rank 1 is at 'gradients, step 3', rank 0 at 'rollout times'" in str(other["error"])


def test_distributed_sync_point_raises_the_failed_peers_error():
    c0, c1 = _pair()
    c1.report_failure("[rank 1] Traceback ...\nValueError: bad row 17")
    t0 = time.monotonic()
    with pytest.raises(PeerFailedError, match=r"rank 1 failed \(this is rank 0\)[\s\S]*bad row 17"):
        c0.sync("rollout")
    assert time.monotonic() - t0 < 1.0


def test_distributed_sync_point_times_out_naming_the_missing_rank():
    c0, _ = _pair(timeout=0.3)
    with pytest.raises(SyncTimeoutError, match=r"rank\(s\) \[1\] did not reach sync point #1 \('grads'\)"):
        c0.sync("grads")


class PausingStore(MemoryStore):
    """A rank's view of the store that freezes (as under SIGSTOP) at its first poll after announcing itself."""

    def __init__(self, shared: MemoryStore):
        self.data, self.lock = shared.data, shared.lock
        self.announced = False

    def add(self, key: str, n: int) -> int:
        if n == 0 and self.announced:
            time.sleep(3600)
        if n == 1 and key.count("/") == 2:  # the arrival counter itself, paddlemix_r1/sync/<n>
            self.announced = True
        return super().add(key, n)


def test_distributed_rank_paused_while_waiting_is_a_sync_timeout_naming_it():
    """A rank that arrived at a sync point and then stopped (SIGSTOP) has not confirmed that it will go on
    into the collective: its peers raise SyncTimeoutError naming it instead of entering the collective
    and waiting there for the backend's bare timeout."""
    shared = MemoryStore()
    c0, c1 = Coordinator(shared, 0, 2, 0.5), Coordinator(PausingStore(shared), 1, 2, 0.5)
    threading.Thread(target=lambda: c1.sync("grads"), daemon=True).start()
    time.sleep(0.1)
    with pytest.raises(SyncTimeoutError, match=r"rank\(s\) \[1\] did not .*sync point #1 \('grads'\)"):
        c0.sync("grads")


def test_distributed_lost_store_is_a_peer_failure():
    c0, _ = _pair(store=BrokenStore())
    with pytest.raises(PeerFailedError, match="lost the connection to the job's store"):
        c0.sync("x")


def test_distributed_failures_reported_raises_the_flag_once():
    c0, c1 = _pair()
    with pytest.raises(KeyError), c1.failures_reported():
        raise KeyError("image missing")
    assert c0.failed_ranks()[1].startswith("[rank 1] Traceback")
    with pytest.raises(PeerFailedError), c0.failures_reported():
        c0.check_peers()
    assert 0 not in c1.failed_ranks()  # a consequence of a peer's failure is not reported as a new one


def _run_python(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=worker_env(), capture_output=True,
                          text=True, timeout=timeout, check=False)


@pytest.mark.slow
def test_distributed_run_guarded_exits_even_with_a_live_thread():
    """A non-daemon thread would keep a normally failing interpreter alive forever; run_guarded exits."""
    t0 = time.monotonic()
    proc = _run_python("""
        import threading, time
        from paddlemix_r1.distributed import run_guarded
        threading.Thread(target=time.sleep, args=(3600,)).start()
        def main():
            raise RuntimeError("reward worker died")
        run_guarded(main)
    """)
    assert proc.returncode == 1
    assert "[rank 0] Traceback" in proc.stderr and "RuntimeError: reward worker died" in proc.stderr
    assert time.monotonic() - t0 < 30
    ok = _run_python("import sys; from paddlemix_r1.distributed import run_guarded; sys.exit(run_guarded(lambda: 0))")
    assert ok.returncode == 0


@pytest.mark.parametrize("n", [5, 7, 12])
@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("per_rank", [1, 2, 3])
def test_distributed_sampler_partitions_the_global_stream(n, world, per_rank):
    samplers = [PromptSampler(n, seed=11, num_replicas=world, rank=r) for r in range(world)]
    reference = PromptSampler(n, seed=11)
    steps = (3 * n) // (world * per_rank) + 1
    for _ in range(steps):
        parts = [s.next(per_rank) for s in samplers]
        expected = reference.next_global(world * per_rank)
        merged = [None] * (world * per_rank)
        for r, part in enumerate(parts):
            merged[r::world] = part
        assert merged == expected
    stream = PromptSampler(n, seed=11).next_global(3 * n)
    for e in range(3):
        assert sorted(stream[e * n:(e + 1) * n]) == list(range(n))  # every prompt once per epoch


def test_distributed_sampler_resumes_with_another_world_size():
    two = [PromptSampler(10, seed=5, num_replicas=2, rank=r) for r in range(2)]
    for _ in range(3):
        for s in two:
            s.next(2)  # 3 steps x 4 prompts: 12 = one epoch and 2
    state = two[0].state_dict()
    assert state == two[1].state_dict() == {"epoch": 1, "position": 2, "seed": 5, "n": 10}
    three = [PromptSampler(10, seed=5, num_replicas=3, rank=r) for r in range(3)]
    for s in three:
        s.load_state_dict(state)
    single = PromptSampler(10, seed=5)
    single.next_global(12)
    expected = single.next_global(6)
    merged = [None] * 6
    for r, s in enumerate(three):
        merged[r::3] = s.next(2)
    assert merged == expected


def test_distributed_rank_seeds():
    assert rank_seed(1234, 0) == 1234  # a single process samples as before
    seeds = {rank_seed(s, r) for s in range(0, 50_000, 7) for r in range(8)}
    assert len(seeds) == len(range(0, 50_000, 7)) * 8


def test_distributed_config_fields():
    cfg = GRPOConfig.load(None, ["sharding_stage=2", "ref_model_offload=true", "sync_timeout=60", "device=gpu"])
    assert (cfg.sharding_stage, cfg.ref_model_offload, cfg.sync_timeout, cfg.device) == (2, True, 60.0, "gpu")
    with pytest.raises(ValueError, match="sharding_stage"):
        GRPOConfig(sharding_stage=4)
    with pytest.raises(ValueError, match="device"):
        GRPOConfig(device="tpu")


@pytest.mark.parametrize("override", ["sharding_stage=2", "ref_model_offload=true", "ref_model_dtype=bfloat16"])
def test_distributed_gpu_features_fail_clearly_on_cpu(tiny_ckpt, tmp_path, override):
    from paddlemix_r1.grpo.trainer import GRPOTrainer

    cfg = GRPOConfig.load(None, [f"model_name_or_path={tiny_ckpt}", f"output_dir={tmp_path}", "visualdl=false",
                                 "device=cpu", override])
    with pytest.raises(RuntimeError, match="needs CUDA devices"):
        GRPOTrainer(cfg)
