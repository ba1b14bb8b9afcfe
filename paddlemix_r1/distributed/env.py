"""Process-group start-up and rank helpers.

``paddle.distributed.launch`` starts one process per device and tells each its place through
environment variables (``PADDLE_TRAINER_ID``, ``PADDLE_TRAINERS_NUM``, ``PADDLE_LOCAL_RANK``,
``FLAGS_selected_gpus``). ``init_distributed`` reads them, picks the device, creates the global
process group when there is more than one process (gloo on CPU, NCCL on GPU) and sets up the
``Coordinator`` that every collective of this package waits on (see coordination.py).
A single process (world size 1) creates no process group and all helpers become identities.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import paddle

from paddlemix_r1.distributed.coordination import Coordinator

DEVICES = ("auto", "cpu", "gpu")
DEFAULT_SYNC_TIMEOUT = 1800.0


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: str  # "cpu" or "gpu:<id>"
    coordinator: Coordinator

    @property
    def is_main(self) -> bool:
        """Rank 0: the only rank that writes checkpoints, logs and sample completions."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def on_gpu(self) -> bool:
        return self.device.startswith("gpu")


_ENV: DistEnv | None = None


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as e:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from e


def launch_world_size() -> int:
    """Number of processes ``paddle.distributed.launch`` started (1 outside the launcher)."""
    return _env_int("PADDLE_TRAINERS_NUM", 1)


def launch_rank() -> int:
    return _env_int("PADDLE_TRAINER_ID", 0)


def _select_device(device: str, rank: int, local_rank: int) -> str:
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    has_gpu = paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if device == "gpu" and not has_gpu:
        raise RuntimeError("device='gpu' but this Paddle build has no CUDA device; use device='cpu' (gloo) "
                           "or install a CUDA build of paddlepaddle")
    if device == "cpu" or not has_gpu:
        paddle.set_device("cpu")
        return "cpu"
    # The launcher pins one GPU per process through FLAGS_selected_gpus; without it, the local rank.
    selected = os.environ.get("FLAGS_selected_gpus", "")
    gpu = int(selected.split(",")[0]) if selected else local_rank
    paddle.set_device(f"gpu:{gpu}")
    return f"gpu:{gpu}"


def process_group_timeout_ms(sync_timeout: float) -> str:
    """``PADDLE_PG_TIMEOUT`` (milliseconds; Paddle's default 30 min, parallel.py) from the job's ``sync_timeout``
    plus a minute: collectives that our sync points do not guard (stage-2 reduce hooks, stage-3 all-gathers, the
    sharded clip's all-reduce) then time out about when a sync point would. A value the user exported wins."""
    return str(int((sync_timeout + 60.0) * 1000))


def init_distributed(device: str = "auto", sync_timeout: float = DEFAULT_SYNC_TIMEOUT) -> DistEnv:
    """Start this process's part of the job (idempotent: later calls return the first result).

    Args:
        device: "cpu", "gpu", or "auto" (GPU when the build and machine have one, else CPU).
            On CPU the process group uses gloo; on GPU, NCCL.
        sync_timeout: seconds a rank waits at a sync point for the others before the job is
            declared hung (``SyncTimeoutError``). Must exceed the longest expected difference in
            progress between ranks, e.g. one rank's rollout being slower than another's.

    Returns the ``DistEnv``. With world size 1 no process group is created.
    """
    global _ENV
    if _ENV is not None:
        if device != "auto" and not _ENV.device.startswith(device):
            raise RuntimeError(f"init_distributed(device={device!r}) after the process was set up on {_ENV.device}")
        return _ENV
    world, rank = launch_world_size(), launch_rank()
    local_rank = _env_int("PADDLE_LOCAL_RANK", rank)
    dev = _select_device(device, rank, local_rank)
    if world > 1:
        if dev == "cpu":
            # Paddle picks the collective backend from this variable; "auto" means NCCL on CUDA builds.
            os.environ["PADDLE_DISTRI_BACKEND"] = "gloo"
        import paddle.distributed as dist

        os.environ.setdefault("PADDLE_PG_TIMEOUT", process_group_timeout_ms(sync_timeout))
        dist.init_parallel_env()
        if dist.get_rank() != rank or dist.get_world_size() != world:
            raise RuntimeError(f"process group says rank {dist.get_rank()}/{dist.get_world_size()}, "
                               f"the launcher's environment {rank}/{world}")
        coordinator = Coordinator.from_global_store(rank, world, sync_timeout)
    else:
        coordinator = Coordinator.single()
    _ENV = DistEnv(rank=rank, world_size=world, local_rank=local_rank, device=dev, coordinator=coordinator)
    return _ENV


def get_env() -> DistEnv:
    """The current ``DistEnv``; a single-process one if ``init_distributed`` was not called."""
    if _ENV is None:
        return DistEnv(rank=0, world_size=1, local_rank=0, device=paddle.get_device(),
                       coordinator=Coordinator.single())
    return _ENV


def get_rank() -> int:
    return get_env().rank


def get_world_size() -> int:
    return get_env().world_size


def is_main_process() -> bool:
    return get_env().is_main


# Rollout seeds of rank r are offset by r * 2**32: the per-step seeds of one rank (a few million at
# most) can then never coincide with another rank's.
RANK_SEED_STRIDE = 1 << 32


def rank_seed(seed: int, rank: int) -> int:
    """Seed for rank ``rank`` derived from a job-wide ``seed``; rank 0 keeps ``seed`` itself, so a
    single-process run samples exactly as before."""
    if rank < 0:
        raise ValueError(f"rank must be >= 0, got {rank}")
    return seed + rank * RANK_SEED_STRIDE
