"""The ``pager`` dispatcher: help, unknown sub-commands, readable errors."""
import subprocess
import sys

from pager.cli import main as cli_main


def test_help_lists_every_command(capsys):
    assert cli_main.main([]) == 0
    out = capsys.readouterr().out
    for name in cli_main.COMMANDS:
        assert name in out


def test_console_script_runs():
    proc = subprocess.run([sys.executable, "-m", "pager.cli.main", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "predict" in proc.stdout
