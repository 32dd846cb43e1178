"""Reading ``--num_processes`` of an ``accelerate launch`` command line (pager.cli.launch).

The end-to-end runs of the documented ``accelerate launch --num_processes 2 --cpu`` command are in
tests/test_inference_cli.py (each sample written once) and tests/test_training_loop.py (two RNG states).
"""
from __future__ import annotations

from pager.cli.launch import requested_processes


def test_num_processes_is_read_from_an_accelerate_command_line():
    assert requested_processes(["python", "/venv/bin/accelerate", "launch", "--num_processes", "2", "--cpu", "x.py"]) == 2
    assert requested_processes(["python", "-m", "accelerate.commands.launch", "--cpu", "--num-processes=3", "x.py"]) == 3
    assert requested_processes(["python", "/venv/bin/accelerate", "launch", "--cpu", "x.py"]) is None
    assert requested_processes(["bash", "run.sh", "--num_processes", "2"]) is None  # not accelerate
    assert requested_processes([]) is None

