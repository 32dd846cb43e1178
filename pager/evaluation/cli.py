"""Command line of the evaluation runners: the ``evaluation/*.py`` scripts and ``pager evaluate``.

Only argparse and the option names live here (no torch, no numpy), so ``--help`` and argument errors answer at
once; the work is imported when a task runs (:func:`pager.evaluation.runners.run_task`). Entry points:
:func:`depth_main`, :func:`normals_main`, :func:`edges_main`, :func:`seams_main` (each ``(argv=None) -> int``),
:func:`main` (task as first argument) and :func:`add_parser` / :func:`run` (the ``pager`` sub-command interface).
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Optional, Sequence

from pager.config_schema import SCENES
from pager.evaluation.names import ALIGNMENT_TYPES, TASKS

_DESCRIPTIONS = {
    "depth": "Depth evaluation of panorama predictions (AbsRel, SqRel, RMSE, RMSE-log, log10, SILog, delta1-3).",
    "normals": "Surface-normals evaluation (mean/median/RMSE angular error, % within 5-30 degrees).",
    "edges": "Depth-edge evaluation (DBE accuracy/completeness after Koch et al. 2018, edge precision/recall).",
    "seams": "Cube-seam evaluation of ERP depth predictions (defect density, prevalence, severity).",
}


def add_arguments(parser: argparse.ArgumentParser, task: str) -> argparse.ArgumentParser:
    """Register the arguments of ``task`` (names as in the original README) on ``parser``."""
    if task not in TASKS:
        raise ValueError(f"unknown evaluation task {task!r}, expected one of {TASKS}")
    need_gt = task != "seams"
    parser.add_argument("--pred_path", type=str, required=True,
                        help="folder with the predictions (its '<dataset>/eval' or '**/eval' holds <id>.npz)")
    parser.add_argument("--data_path", type=str, required=need_gt,
                        help="root directory of the datasets" + ("" if need_gt else " (optional for seams)"))
    parser.add_argument("--dataset", type=str, required=need_gt,
                        help="dataset name (e.g. Matterport3D360, Stanford2D3DS, Structured3D, Replica360_4K)")
    parser.add_argument("--split", type=str, default="test", help="dataset split (default: test)")
    parser.add_argument("--scenes", type=str, default="both", choices=SCENES,
                        help="scene types to evaluate (default: both)")
    parser.add_argument("--strict", action="store_true",
                        help="fail on a missing, unreadable, wrongly shaped or non-finite prediction")
    parser.add_argument("--skip_bad_samples", action="store_true",
                        help="count and skip samples whose ground truth cannot be read (listed as 'bad_sample') "
                             "instead of stopping")
    parser.add_argument("--output_dir", type=str, default=None,
                        help="where to write the reports (default: next to the 'eval' folder)")
    parser.add_argument("--device", type=str, default=None, help="torch device (default: cuda if available)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing report files and error maps")
    if task in ("depth", "normals", "edges"):
        parser.add_argument("--num_workers", type=int, default=0, help="DataLoader workers decoding ground truth")
    if task in ("depth", "normals"):
        parser.add_argument("--latitude_weighting", action="store_true",
                            help="weight ERP pixels by cos(latitude) (off: uniform, as the paper)")
        parser.add_argument("--save_error_maps", action="store_true", help="save per-sample error maps (PNG)")
        parser.add_argument("--error_maps_saving_frequency", type=int, default=1,
                            help="save an error map every N samples (default: 1)")
    if task == "depth":
        parser.add_argument("--alignment_type", type=str, default="metric", choices=ALIGNMENT_TYPES,
                            help="alignment of the prediction to the ground truth (default: metric = none)")
        parser.add_argument("--max_depth", type=float, default=None,
                            help="evaluate only ground truth up to this depth in metres (default: dataset range)")
        parser.add_argument("--clip_pred", action="store_true",
                            help="clip the aligned prediction to the dataset's [min_depth, max_depth]")
        parser.add_argument("--invalid_mask_iou", action="store_true",
                            help="also score the prediction's invalid pixels (its saved 'mask': sky, beyond range) "
                                 "against the ground truth's: invalid_iou, invalid_precision, invalid_recall")
    if task == "edges":
        parser.add_argument("--dbe_max_distance", type=float, default=None,
                            help="distance cap (pixels) of the DBE metrics (default: dataset max depth, as the "
                                 "reference; Koch et al. use 10)")
        parser.add_argument("--edge_threshold", type=float, default=0.01,
                            help="Sobel magnitude threshold on min-max-normalised depth (default: 0.01)")
        parser.add_argument("--completeness", type=str, default="reference", choices=("reference", "koch"),
                            help="DBE completeness formula (default: the reference's symmetric chamfer)")
    if task == "seams":
        parser.add_argument("--pixel_jump_thresh", type=float, default=0.010,
                            help="excess jump (normalised depth) above which a seam pixel pair is broken")
        parser.add_argument("--edge_mean_jump_thresh", type=float, default=0.008,
                            help="mean excess jump above which a cube edge counts as broken (severity)")
        parser.add_argument("--min_broken_pixel_frac", type=float, default=0.05,
                            help="fraction of broken pairs above which a cube edge counts (prevalence)")
        parser.add_argument("--no_interior_compensation", action="store_true",
                            help="use the raw seam jump (the reference's statistic) instead of the excess "
                                 "over the in-face gradient")
        parser.add_argument("--seam_tolerance", type=int, default=1,
                            help="pixels of tolerance on the seam position (default: 1)")
        parser.add_argument("--with_ground_truth", action="store_true",
                            help="also the ground truth's seam metrics (gt_*), both over its valid pixels "
                                 "(needs --data_path and --dataset)")
    return parser


def build_parser(task: str) -> argparse.ArgumentParser:
    """A stand-alone parser of one task (used by the ``evaluation/*.py`` scripts)."""
    parser = argparse.ArgumentParser(description=_DESCRIPTIONS[task])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return add_arguments(parser, task)


#: the original project's script of each task (``python evaluation/<script> ...``): their messages' name
SCRIPT_NAMES = {"depth": "depth_evaluation.py", "normals": "normals_estimation.py", "edges": "edge_estimation.py",
                "seams": "seams_evaluation.py"}


def _main_for(task: str, argv: Optional[Sequence[str]], prog: Optional[str] = None) -> int:
    from pager.cli.main import run_script

    prog = prog or SCRIPT_NAMES.get(task, f"evaluation {task}")

    def run_parsed(args: argparse.Namespace) -> int:
        from pager.evaluation.runners import run_task  # torch etc.: only once the arguments are parsed

        return _report(run_task(args, task), task, prog)

    parser = build_parser(task)
    parser.prog = prog
    return run_script(parser, run_parsed, argv)


def _report(result: Any, task: str, prog: Optional[str] = None) -> int:
    """Print the table (exit code 0), or, when nothing could be evaluated, the reason on stderr (exit code 1;
    the report files, which list every sample's problem, are written all the same)."""
    files = f"{result.outputs.get('txt')}, {result.outputs.get('json')}, {result.outputs.get('csv')}"
    if result.failure:
        sys.stderr.write(f"{prog or f'pager evaluate {task}'}: error: {result.failure}\n")
        sys.stderr.write(f"the failure report (each sample's problem) is in {files}\n")
        return 1
    saved = f"saved {files}\n"
    from pager.evaluation.runners import format_table

    sys.stdout.write(format_table(result))
    sys.stdout.write(saved)
    return 0


def depth_main(argv: Optional[Sequence[str]] = None) -> int:
    """``python evaluation/depth_evaluation.py ...``; returns the exit code."""
    return _main_for("depth", argv)


def normals_main(argv: Optional[Sequence[str]] = None) -> int:
    """``python evaluation/normals_estimation.py ...``; returns the exit code."""
    return _main_for("normals", argv)


def edges_main(argv: Optional[Sequence[str]] = None) -> int:
    """``python evaluation/edge_estimation.py ...``; returns the exit code."""
    return _main_for("edges", argv)


def seams_main(argv: Optional[Sequence[str]] = None) -> int:
    """``python evaluation/seams_evaluation.py ...``; returns the exit code."""
    return _main_for("seams", argv)


def add_parser(subparsers: Any, name: str = "evaluate") -> argparse.ArgumentParser:
    """Register ``<name> {depth,normals,edges,seams} ...`` on a sub-parser set (``pager`` CLI convention).

    Pair with :func:`run`; the chosen task is stored in ``args.eval_task``.
    """
    parser = subparsers.add_parser(name, help="evaluate predictions against a dataset (depth, normals, edges, seams)")
    tasks = parser.add_subparsers(dest="eval_task", metavar="TASK", required=True)
    for task in TASKS:
        add_arguments(tasks.add_parser(task, help=_DESCRIPTIONS[task], description=_DESCRIPTIONS[task]), task)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the task chosen through :func:`add_parser` (``args.eval_task``), print the table; exit code.

    Together with :func:`add_parser` this is the ``pager`` sub-command interface, so
    ``pager/cli/evaluate.py`` can be ``from pager.evaluation.runners import add_parser, run``.
    ``ValueError`` / ``FileNotFoundError`` propagate (the ``pager`` dispatcher reports them); exit code 1
    when nothing could be evaluated.
    """
    from pager.evaluation.runners import run_task

    result = run_task(args, args.eval_task)
    return _report(result, args.eval_task)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``pager evaluate {depth,normals,edges,seams} ...``: the task is the first argument."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in TASKS:
        sys.stderr.write(f"usage: evaluate {{{','.join(TASKS)}}} [options]  (got {argv[:1] or 'nothing'})\n")
        return 2
    return _main_for(argv[0], argv[1:], prog=f"evaluate {argv[0]}")
