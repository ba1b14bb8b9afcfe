"""Fixtures shared by every test package, and the process set-up of the test run.

The suite runs with the package's CPU runtime settings, applied before any test module imports
paddle (``paddlemix_r1.configure_runtime``; tests/test_runtime.py tests the call itself).

Tiers: ``python -m pytest -q -m "not slow" tests`` is the developer loop; ``slow`` marks the
two-process launches, reference-framework subprocess runs, demo runs, fault injection and long
end-to-end or property tests, which ``python -m pytest -q tests`` (CI) runs too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

import paddlemix_r1

paddlemix_r1.configure_runtime()


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> str:
    """A tiny random Qwen2.5-VL checkpoint (seed 1), built once per session. Read-only: a test that
    changes a checkpoint builds or copies its own."""
    from paddlemix_r1.models import build_tiny_checkpoint

    return build_tiny_checkpoint(str(tmp_path_factory.mktemp("tiny_qwen2_5_vl_seed1")), family="qwen2_5_vl", seed=1)


@pytest.fixture(scope="module")
def register_rewards() -> Iterator[Callable[..., None]]:
    """``register_rewards(name=fn, ...)``: put rewards in the process-wide registry for the tests of one
    module; the registry is restored when the module's tests end."""
    from paddlemix_r1.rewards import registry

    with pytest.MonkeyPatch.context() as mp:

        def add(**rewards: Callable) -> None:
            for name, fn in rewards.items():
                mp.setitem(registry._REGISTRY, name, fn)

        yield add
