"""Data-parallel GRPO: process-group start-up, rank helpers, collectives behind failure-aware sync
points, GPU sharding, and the memory budget arithmetic of docs/distributed.md."""

from paddlemix_r1.distributed.collectives import (
    all_gather_arrays,
    all_gather_object,
    all_reduce_sum,
    all_true,
    all_true_unguarded,
    allreduce_gradients,
    barrier,
    broadcast_parameters,
    reduce_metrics,
)
from paddlemix_r1.distributed.coordination import (
    Coordinator,
    PeerFailedError,
    SyncOrderError,
    SyncTimeoutError,
    run_guarded,
)
from paddlemix_r1.distributed.env import (
    DistEnv,
    get_env,
    get_rank,
    get_world_size,
    init_distributed,
    is_main_process,
    launch_world_size,
    rank_seed,
)

__all__ = [
    "Coordinator",
    "DistEnv",
    "PeerFailedError",
    "SyncOrderError",
    "SyncTimeoutError",
    "all_gather_arrays",
    "all_gather_object",
    "all_reduce_sum",
    "all_true",
    "all_true_unguarded",
    "allreduce_gradients",
    "barrier",
    "broadcast_parameters",
    "get_env",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_main_process",
    "launch_world_size",
    "rank_seed",
    "reduce_metrics",
    "run_guarded",
]
