"""Installation and start-up: the package never drags Paddle's CPU wheel over a GPU install (audit B11), says
what to install when Paddle is missing or old, and sets CPU runtime defaults by what the machine is (R15)."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import setuptools

from paddlemix_r1 import _runtime

REPO = Path(__file__).resolve().parents[1]


def _setup_kwargs(monkeypatch) -> dict:
    captured: dict = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kw: captured.update(kw))
    monkeypatch.chdir(REPO)
    runpy.run_path(str(REPO / "setup.py"))
    return captured


def test_paddle_is_an_extra_not_a_requirement(monkeypatch):
    """B11: pip does not count paddlepaddle-gpu as paddlepaddle; a hard requirement installed the CPU wheel
    over the GPU one (both write site-packages/paddle)."""
    kw = _setup_kwargs(monkeypatch)
    assert not [r for r in kw["install_requires"] if r.lower().startswith("paddle")]
    assert kw["extras_require"]["cpu"] == ["paddlepaddle>=3.3.1"]
    assert '".[cpu,test]"' in (REPO / ".ci" / "run").read_text()
    assert 'pip install -e ".[cpu]" && paddlemix-r1 demo' in (REPO / "README.md").read_text()


def _versions(found: dict[str, str]):
    def version(dist):
        if dist not in found:
            raise metadata.PackageNotFoundError(dist)
        return found[dist]
    return version


@pytest.mark.parametrize("found,error", [
    ({"paddlepaddle": "3.3.1"}, None),
    ({"paddlepaddle-gpu": "3.3.0"}, None),
    ({"paddlepaddle-gpu": "0.0.0"}, None),  # a develop build
    ({"paddlepaddle-gpu": "2.6.2"}, "found paddlepaddle-gpu 2.6.2"),
    ({"paddlepaddle": "3.2.0"}, "found paddlepaddle 3.2.0"),
])
def test_import_checks_the_paddle_version(monkeypatch, found, error):
    monkeypatch.setattr(metadata, "version", _versions(found))
    if error is None:
        _runtime.check_paddle_installed()
    else:
        with pytest.raises(ImportError, match=error) as e:
            _runtime.check_paddle_installed()
        assert "paddlepaddle-gpu>=3.3 from Paddle's package index" in str(e.value)


def test_both_wheels_installed_is_a_warning(monkeypatch):
    monkeypatch.setattr(metadata, "version", _versions({"paddlepaddle": "3.3.1", "paddlepaddle-gpu": "3.3.1"}))
    with pytest.warns(RuntimeWarning, match="share site-packages/paddle"):
        _runtime.check_paddle_installed()


def test_missing_paddle_says_what_to_install(monkeypatch):
    import importlib.util

    monkeypatch.setattr(metadata, "version", _versions({}))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"not installed\. CPU: pip install"):
        _runtime.check_paddle_installed()


@pytest.mark.parametrize("cores,local,threads", [(16, None, 16), (16, "8", 2), (4, "8", 1), (2, "2", 1)])
def test_threads_divided_among_local_ranks(cores, local, threads):
    env = {} if local is None else {"PADDLE_LOCAL_SIZE": local}
    assert _runtime.threads_per_process(cores, env) == threads


def test_mkl_cpu_type_set_on_amd_only():
    """MKL_DEBUG_CPU_TYPE=5 is an AMD fix; on Intel it forces MKL's AVX2 path over AVX-512."""
    env = {k: v for k, v in os.environ.items() if k not in ("MKL_DEBUG_CPU_TYPE", "MKL_NUM_THREADS", "OMP_NUM_THREADS")}
    code = ("import os, paddlemix_r1, paddlemix_r1._runtime as r; paddlemix_r1.configure_runtime(); "
            "print(os.environ.get('MKL_DEBUG_CPU_TYPE'), r.cpu_vendor())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=REPO)
    value, vendor = out.stdout.split()
    assert value == ("5" if vendor == "AuthenticAMD" else "None"), out.stdout


def test_the_library_never_imports_torch():
    """Every module of the package imports without torch (the parity tests bring torch into the test
    process as a reference; the library must not need it)."""
    code = ("import importlib, pkgutil, sys, paddlemix_r1\n"
            "names = [m.name for m in pkgutil.walk_packages(paddlemix_r1.__path__, 'paddlemix_r1.')]\n"
            "for name in names:\n"
            "    importlib.import_module(name)\n"
            "print(len(names), sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'trl')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    count, leaked = out.stdout.strip().splitlines()[-1].split(" ", 1)
    assert int(count) > 50 and leaked == "[]", out.stdout
