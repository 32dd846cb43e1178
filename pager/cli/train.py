"""``pager train`` / ``train.py``: fine-tune a PaGeR depth or normals UNet end to end (see the README's tables).

Every leaf of ``configs/base.yaml`` is an option (``--max_train_steps 1000 --log_scale false ...``); the
YAML given with ``--config`` is the starting point and the command line wins. With ``--resume_path`` the
config stored beside the training checkpoint is used instead of ``--config``. Works under
``accelerate launch`` (several GPUs / nodes / CPU processes) as well as with plain ``python``.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, List, Optional

logger = logging.getLogger(__name__)

DESCRIPTION = "Fine-tune a PaGeR depth or normals model end to end (Accelerate; resumable)."


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--config`` plus one ``--<leaf>`` option per leaf of the training template."""
    from pager.config import add_config_arguments, load_config

    if not any(a.dest == "config" for a in parser._actions):
        parser.add_argument("--config", "--configs", dest="config", default=None,
                            help="YAML config file (default: the packaged configs/base.yaml)")
    add_config_arguments(parser, load_config(None, "base.yaml"))
    if not any(a.dest == "allow_pickle" for a in parser._actions):
        parser.add_argument("--allow_pickle", action="store_true",
                            help="also unpickle files that weights-only loading refuses (resumed training states, .bin "
                                 "weights); pickles can run arbitrary code: only for files you trust")
    return parser


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``pager train`` sub-command."""
    parser = subparsers.add_parser("train", help="fine-tune a PaGeR model (same as train.py)", description=DESCRIPTION)
    return add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Resolve the config from ``args`` and train; returns the exit code."""
    from pager.config import cli_overrides, load_config

    template = load_config(None, "base.yaml")
    overrides = cli_overrides(args, template)
    if getattr(args, "config", None) and not getattr(args, "resume_path", None):
        load_config(args.config)  # a bad config file is reported before torch & co are imported (seconds)
    from pager.training.trainer import load_training_config, train

    overrides.pop("training.resume_path", None)
    cfg = load_training_config(getattr(args, "config", None), overrides, resume_path=getattr(args, "resume_path", None))
    result = train(cfg, overrides, allow_pickle=bool(getattr(args, "allow_pickle", False)))
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return 0
    print(f"training done: {result.global_step} steps, run folder {result.run_dir}"
          + (f", checkpoint {result.checkpoint_dir}" if result.checkpoint_dir else ""))
    if cfg.get("data", {}).get("skip_bad_samples"):
        print(f"  {result.skipped} bad sample(s) skipped")
    for key, value in sorted(result.val_metrics.items()):
        print(f"  {key} = {value:.4f}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``train.py``: the same options as ``pager train``."""
    from pager.cli.main import run_script

    return run_script(add_arguments(argparse.ArgumentParser(prog="train.py", description=DESCRIPTION)), run, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
