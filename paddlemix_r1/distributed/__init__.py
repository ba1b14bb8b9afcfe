"""Data-parallel GRPO: process-group start-up, rank helpers, collectives behind failure-aware sync
points, GPU sharding, and the memory budget arithmetic of docs/distributed.md.

Importing this package puts our SIGTERM / SIGINT handler in place of the one paddle installs (signals.py
says why); the signals are held back while paddle is imported, so none reaches paddle's handler.
"""

from paddlemix_r1.distributed import signals
from paddlemix_r1.distributed.signals import Interrupted

with signals.deferred():
    import paddle  # noqa: F401 - imported here, under the blocked signals, before the modules below use it

from paddlemix_r1.distributed.collectives import (  # noqa: E402 - after paddle's import above
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
from paddlemix_r1.distributed.coordination import (  # noqa: E402
    Coordinator,
    PeerFailedError,
    SyncOrderError,
    SyncTimeoutError,
    run_guarded,
)
from paddlemix_r1.distributed.env import (  # noqa: E402
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
    "Interrupted",
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
