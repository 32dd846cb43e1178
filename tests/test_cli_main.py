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


def test_evaluate_subcommand_reports_missing_dataset_folder(tmp_path, capsys):
    code = cli_main.main(["evaluate", "depth", "--pred_path", str(tmp_path / "nothing"), "--data_path", str(tmp_path),
                          "--dataset", "Synthetic"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("pager evaluate: error:") and str(tmp_path / "Synthetic") in err
