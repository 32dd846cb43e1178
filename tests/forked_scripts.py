"""Run Python scripts as ``python SCRIPT ARGS...`` would, each in its own process, without paying the
interpreter start-up and the import of torch / diffusers (several seconds of CPU each) once per script.

A small server process imports the heavy third-party modules once (``PRELOAD``: torch, numpy, PIL, diffusers'
model classes; nothing of this repository) and then, for every script, forks: the child sets the script's
working directory, environment, ``sys.argv`` and ``sys.path[0]``, redirects its stdout / stderr to files,
runs the script as ``__main__`` (``runpy.run_path``, what ``python SCRIPT`` does) and exits with the script's
exit status (an uncaught exception prints its traceback and gives 1, ``sys.exit("message")`` prints the message
and gives 1). Each script thus runs in a separate process, after the others and without their state; only the
already-imported third-party modules are shared (copy-on-write). Scripts that start worker processes of their
own still start them with a fresh interpreter.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence

PRELOAD = ("torch", "numpy", "PIL.Image", "diffusers:AutoencoderKL,UNet2DConditionModel")

_SERVER = r'''
import importlib, json, os, sys
for spec in json.loads(sys.argv[1]):
    module, _, names = spec.partition(":")
    mod = importlib.import_module(module)
    for name in filter(None, names.split(",")):
        getattr(mod, name)
channel_in, channel_out = os.fdopen(0, "r"), os.fdopen(os.dup(1), "w")
os.dup2(2, 1)  # nothing but the replies on the channel

def run(job):
    import runpy, traceback
    out = os.open(job["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    err = os.open(job["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(out, 1)
    os.dup2(err, 2)
    os.chdir(job["cwd"])
    os.environ.clear()
    os.environ.update(job["env"])
    sys.argv = [job["script"], *job["args"]]
    sys.path[0] = os.path.dirname(os.path.abspath(job["script"]))
    code = 0
    try:
        runpy.run_path(job["script"], run_name="__main__")
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    return code

for line in channel_in:
    job = json.loads(line)
    while True:  # reap background scripts that have ended
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        channel_in.close()
        channel_out.close()
        code = 1
        try:
            code = run(job)
            import atexit
            atexit._run_exitfuncs()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    if job.get("background"):
        channel_out.write(json.dumps({"pid": pid}) + "\n")
        channel_out.flush()
        continue
    _, status = os.waitpid(pid, 0)
    channel_out.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}) + "\n")
    channel_out.flush()
'''


@dataclass
class Completed:
    """What ``subprocess.run(..., capture_output=True, text=True)`` would return."""

    returncode: int
    stdout: str
    stderr: str


class ScriptRunner:
    """A server process that runs scripts one at a time, each in a forked child (see the module docstring)."""

    def __init__(self, env: Optional[Dict[str, str]] = None, preload: Sequence[str] = PRELOAD) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _SERVER, json.dumps(list(preload))], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)

    def run(self, script: Path, args: Sequence[str], cwd: Path, env: Dict[str, str], timeout: float = 600) -> Completed:
        """Run ``python script *args`` in ``cwd`` with environment ``env``; returns its status and output. The
        server should have been started with the same ``PYTHONPATH`` (``sys.path`` is computed at its start)."""
        import select
        import tempfile

        with tempfile.TemporaryDirectory(prefix="script_output_") as logs:
            out, err = Path(logs) / "stdout.txt", Path(logs) / "stderr.txt"
            job = dict(script=str(script), args=[str(a) for a in args], cwd=str(cwd), env=dict(env), stdout=str(out),
                       stderr=str(err))
            assert self.proc.poll() is None, "the script server has exited"
            self.proc.stdin.write(json.dumps(job) + "\n")
            self.proc.stdin.flush()
            ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
            if not ready:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the server, the script's process and its children
                raise TimeoutError(f"{script} did not finish within {timeout} s:\n{err.read_text(errors='replace')[-3000:]}")
            line = self.proc.stdout.readline()
            assert line, "the script server died"
            reply = json.loads(line)
            return Completed(reply["returncode"], out.read_text(errors="replace"), err.read_text(errors="replace"))

    def start(self, script: Path, args: Sequence[str], cwd: Path, env: Dict[str, str], output: Path) -> "Background":
        """Start ``python script *args`` (stdout and stderr to ``output``) and return at once; for servers."""
        job = dict(script=str(script), args=[str(a) for a in args], cwd=str(cwd), env=dict(env), stdout=str(output),
                   stderr=str(output), background=True)
        assert self.proc.poll() is None, "the script server has exited"
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the script server died"
        return Background(json.loads(line)["pid"])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


class Background:
    """A script started with :meth:`ScriptRunner.start` (a child of the server, which reaps it)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def running(self) -> bool:
        """Whether the script is still running (not ended, not a zombie waiting to be reaped)."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")

    def terminate(self, timeout: float = 20) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        import time

        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10)):
            if not self.running():
                return
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                return
            deadline = time.time() + wait
            while self.running() and time.time() < deadline:
                time.sleep(0.1)
