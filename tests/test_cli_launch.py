"""``accelerate launch --cpu --num_processes N`` really runs N processes of inference.py / train.py."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from pager.cli.launch import requested_processes
from tests.test_inference_cli import N_SAMPLES, REPO, infer_args, world  # noqa: F401  (fixtures)


def test_num_processes_is_read_from_an_accelerate_command_line():
    assert requested_processes(["python", "/venv/bin/accelerate", "launch", "--num_processes", "2", "--cpu", "x.py"]) == 2
    assert requested_processes(["python", "-m", "accelerate.commands.launch", "--cpu", "--num-processes=3", "x.py"]) == 3
    assert requested_processes(["python", "/venv/bin/accelerate", "launch", "--cpu", "x.py"]) is None
    assert requested_processes(["bash", "run.sh", "--num_processes", "2"]) is None  # not accelerate
    assert requested_processes([]) is None


def test_accelerate_cpu_launch_splits_inference_between_two_processes(world, tmp_path):
    results = tmp_path / "results"
    env = dict(os.environ, PAGER_CACHE_DIR=str(world["root"] / "cache"), OMP_NUM_THREADS="1",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("PAGER_NO_RELAUNCH", None)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           str(REPO / "inference.py"), *infer_args(world, results, "--generate_eval", "--img_report_frequency", "1")]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    counts = {int(r): int(k) for r, k in re.findall(r"process (\d) of 2: (\d+) sample", log)}
    assert counts == {0: 3, 1: 2}, log[-3000:]
    root = results / "PaGeR-tiny-depth" / "Synthetic"
    assert len(list((root / "eval").glob("*.npz"))) == N_SAMPLES
