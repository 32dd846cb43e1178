"""Every benchmark script runs: ``python benchmarks/<name>.py --smoke`` (smallest settings) exits 0.

The printed numbers are not checked (timings belong to the scripts, not to tests); a benchmark added later
needs a ``--smoke`` option to pass this test. Each script runs as ``__main__`` in a process of its own, forked
from one server that has imported torch / diffusers once (``script_runner`` in conftest.py): the same run as
``python SCRIPT --smoke`` without 15 times the seconds of interpreter start-up and imports.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# gpu_check.py --smoke (= --cpu-smoke) runs in tests/test_model_fast_path.py, which also checks its table rows
SCRIPTS = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if p.name != "gpu_check.py")


def test_benchmarks_exist():
    assert len(SCRIPTS) >= 7


# modes of a script that its plain --smoke run does not reach
EXTRA = [(ROOT / "benchmarks" / "inference.py", ("--compare_plain", "--profile")),
         (ROOT / "benchmarks" / "inference.py", ("--tiled_vae",)),
         (ROOT / "benchmarks" / "tiled_decoding.py", ("--part", "encoder"))]


def _env(**extra: str) -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **extra)


@pytest.mark.parametrize("script,extra", [(p, ()) for p in SCRIPTS] + EXTRA,
                         ids=lambda v: v.name if isinstance(v, Path) else " ".join(v) or "-")
def test_benchmark_runs_with_smallest_settings(script, extra, tmp_path, script_runner):
    out = script_runner.run(script, ["--smoke", *extra], cwd=tmp_path, env=_env(PAGER_CACHE_DIR=str(tmp_path / "cache")))
    assert out.returncode == 0, f"{script.name} --smoke failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    assert out.stdout.strip(), f"{script.name} printed nothing"
    assert "Traceback" not in out.stderr
