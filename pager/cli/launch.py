"""Make ``accelerate launch --cpu --num_processes N script.py`` start N processes.

Accelerate's ``--cpu`` launcher (its "simple" launcher) starts a single process and forgets
``--num_processes`` unless an MPI hostfile is given. Users scale PaGeR's scripts with exactly that command,
so :func:`relaunch_cpu_processes` recognises the situation (``ACCELERATE_USE_CPU`` set, no ``WORLD_SIZE``,
the parent process being ``accelerate launch ... --num_processes N``) and re-runs the script under
``torch.distributed.run`` with N local CPU processes (gloo backend); Accelerate then sees ``MULTI_CPU``.
Set ``PAGER_NO_RELAUNCH=1`` to keep accelerate's single process.
"""
from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Sequence

logger = logging.getLogger(__name__)


def _parent_cmdline(pid: Optional[int] = None) -> List[str]:
    """The command line of the parent process (Linux ``/proc``; empty where unavailable)."""
    pid = os.getppid() if pid is None else pid
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def requested_processes(cmdline: Sequence[str]) -> Optional[int]:
    """``N`` of ``--num_processes N`` (or ``--num-processes=N``) in an ``accelerate launch`` command line."""
    if not any("accelerate" in part for part in cmdline) or "launch" not in " ".join(cmdline):
        return None
    for i, part in enumerate(cmdline):
        for flag in ("--num_processes", "--num-processes"):
            if part == flag and i + 1 < len(cmdline):
                value = cmdline[i + 1]
            elif part.startswith(flag + "="):
                value = part.split("=", 1)[1]
            else:
                continue
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def relaunch_cpu_processes(script: str, argv: Sequence[str]) -> Optional[int]:
    """Re-run ``script argv`` as N CPU processes when launched by ``accelerate launch --cpu --num_processes N``.

    Returns the exit code of the multi-process run, or ``None`` when nothing needs to be done (the caller
    then runs normally).
    """
    env = os.environ
    if env.get("PAGER_NO_RELAUNCH") or "WORLD_SIZE" in env:
        return None
    if env.get("ACCELERATE_USE_CPU", "").lower() not in ("true", "1", "yes"):
        return None
    wanted = requested_processes(_parent_cmdline())
    if wanted is None or wanted <= 1:
        return None
    logger.warning(
        "accelerate's --cpu launcher starts one process; running %s as %d CPU processes with torch.distributed.run",
        Path(script).name, wanted,
    )
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(wanted),
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), script, *argv]
    child_env = dict(env, PAGER_NO_RELAUNCH="1")
    return subprocess.run(cmd, env=child_env).returncode
