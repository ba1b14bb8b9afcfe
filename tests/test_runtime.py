"""The CPU runtime settings: importing the package changes nothing; ``configure_runtime()`` sets exactly
what it reports, and ``restore_runtime()`` undoes it. Each case runs in a fresh interpreter (the test
process itself was configured by tests/conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import paddle

from paddlemix_r1 import _runtime

USER_KNOBS = ("MKL_DEBUG_CPU_TYPE", "MKL_NUM_THREADS", "OMP_NUM_THREADS", "FLAGS_use_stride_kernel",
              "PADDLEMIX_R1_MALLOC", "GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
GLIBC = sys.platform.startswith("linux") and _runtime._mallopt(_runtime.HEAP_KEEP_BYTES)  # this process has it already
CPU_BUILD = not paddle.is_compiled_with_cuda()


def _run(script: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in USER_KNOBS}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_changes_nothing_and_configure_after_paddle_sets_what_it_reports():
    """The notebook case: paddle is imported first, then the package."""
    out = _run(
        "import json, os\n"
        "import paddle\n"
        "flag = lambda: paddle.get_flags(['FLAGS_use_stride_kernel'])['FLAGS_use_stride_kernel']\n"
        "env0, flag0 = dict(os.environ), flag()\n"
        "import paddlemix_r1, paddlemix_r1.ops, paddlemix_r1.models\n"
        "r = {'import_env_same': dict(os.environ) == env0, 'import_flag': flag(), 'flag0': flag0,\n"
        "     'import_settings': paddlemix_r1.runtime_settings()}\n"
        "r['set'] = paddlemix_r1.configure_runtime()\n"
        "r['env_after_set'] = {k: v for k, v in os.environ.items() if env0.get(k) != v}\n"
        "r['flag_after_set'] = flag()\n"
        "r['undone'] = paddlemix_r1.restore_runtime()\n"
        "r['restored_env_same'], r['restored_flag'] = dict(os.environ) == env0, flag()\n"
        "r['settings_after_restore'] = paddlemix_r1.runtime_settings()\n"
        "print(json.dumps(r))\n"
    )
    assert out["import_env_same"] and out["import_flag"] == out["flag0"] and out["import_settings"] == {}
    expected = set()
    if GLIBC:
        expected.add("malloc")
    if CPU_BUILD:
        expected.add("FLAGS_use_stride_kernel")
    assert set(out["set"]) == expected  # paddle came first: too late for the MKL variables, so none are set
    assert out["env_after_set"] == {}
    assert out["flag_after_set"] is (False if CPU_BUILD else out["flag0"])
    assert out["undone"] == out["set"]
    assert out["restored_env_same"] and out["restored_flag"] == out["flag0"] and out["settings_after_restore"] == {}


def test_configure_before_paddle_sets_the_mkl_defaults_and_respects_the_users():
    """The script case: configure first, then paddle; a variable the user exported is left alone."""
    out = _run(
        "import json, os\n"
        "os.environ['MKL_DEBUG_CPU_TYPE'] = '4'\n"
        "import paddlemix_r1\n"
        "s = paddlemix_r1.configure_runtime()\n"
        "import paddle\n"
        "print(json.dumps({'set': s, 'threads': os.environ.get('MKL_NUM_THREADS'),\n"
        "                  'mkl_type': os.environ['MKL_DEBUG_CPU_TYPE'], 'cores': len(os.sched_getaffinity(0))}))\n"
    )
    assert "MKL_DEBUG_CPU_TYPE" not in out["set"] and out["mkl_type"] == "4"
    assert out["set"]["MKL_NUM_THREADS"] == out["threads"] == str(out["cores"])

