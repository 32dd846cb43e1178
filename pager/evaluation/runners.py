"""Evaluation runners: prediction files + a dataset's ground truth in, tables out.

Predictions are the ``.npz`` files written by ``inference.py --generate_eval``:
``<pred_path>/**/eval/<id>.npz`` with key ``arr_0`` holding depth ``[H, W]`` in metres or normals
``[3, H, W]`` / ``[H, W, 3]`` in the library's world frame. Each runner pairs them with the ground
truth of ``pager.data.build_dataset(dataset, data_path, split, scenes)`` by sample id, computes the
metrics of :mod:`pager.evaluation.metrics` per sample, averages them over the evaluated samples and
writes, next to the ``eval`` folder (or into ``--output_dir``):

* ``evaluation_metrics_<tag>.txt`` (a readable table) and ``evaluation_metrics_<tag>.json``,
* ``evaluation_per_sample_<tag>.csv`` (one row per sample of the split, with its status),
* with ``--save_error_maps``: ``error_maps_<tag>/<id>.png`` every ``--error_maps_saving_frequency``
  samples (signed depth error on a diverging colormap; angular error for normals),

where ``<tag>`` is the depth alignment type (``metric``, ``scale`` ...) or ``normals``, ``edges``,
``seams``. These files are checked before any sample is read: existing ones are refused, by name,
unless ``overwrite=True`` (``--overwrite``). Predictions are matched by our sample id or by the id the
original PaGeR dataloaders give the sample (the name the original ``inference.py`` writes; see
:func:`match_predictions`). A prediction that is missing, unreadable, of a complex dtype, of the wrong shape or
empty, non-finite, or gives a non-finite metric is reported by name (log, table, JSON, CSV), counted, and left
out of the averages; with ``strict=True`` it raises ``ValueError`` instead. When no sample could be evaluated
the result's ``failure`` says why and the command-line entry points exit with code 1 instead of printing a
table.

Command lines (argument names of the original README): :func:`depth_main`, :func:`normals_main`,
:func:`edges_main`, :func:`seams_main` (each ``(argv=None) -> int``), and :func:`main` taking the
task as first argument (``depth``/``normals``/``edges``/``seams``) for ``pager evaluate``; they live in the
torch-free :mod:`pager.evaluation.cli` (re-exported here) and call :func:`run_task`.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from pager.evaluation import metrics as M
from pager.io_utils import atomic_write, check_outputs

logger = logging.getLogger(__name__)

__all__ = [
    "TASKS",
    "PROBLEM_KINDS",
    "EvaluationResult",
    "PredictionProblem",
    "find_eval_dir",
    "match_predictions",
    "load_prediction",
    "evaluate_depth",
    "evaluate_normals",
    "evaluate_edges",
    "evaluate_seams",
    "write_outputs",
    "render_error_map",
    "build_parser",
    "add_arguments",
    "run",
    "run_task",
    "add_parser",
    "format_table",
    "load_prediction_mask",
    "main",
    "depth_main",
    "normals_main",
    "edges_main",
    "seams_main",
]

from pager.evaluation.names import TASKS  # noqa: E402  (re-exported)
#: Kinds of problems a prediction file can have (status values in the per-sample CSV besides ``ok``).
PROBLEM_KINDS: Tuple[str, ...] = ("missing", "unreadable", "bad_dtype", "bad_shape", "nonfinite", "empty_mask",
                                  "alignment_failed", "nonfinite_metric", "bad_sample")


class PredictionProblem(ValueError):
    """A prediction file that cannot be evaluated; ``kind`` is one of :data:`PROBLEM_KINDS`."""

    def __init__(self, kind: str, sample_id: str, path: Path, detail: str) -> None:
        super().__init__(f"prediction {sample_id} ({path}): {kind}: {detail}")
        self.kind = kind
        self.sample_id = sample_id
        self.path = path
        self.detail = detail


@dataclass
class EvaluationResult:
    """Outcome of one runner: averaged metrics, per-sample rows and the problems found."""

    task: str
    tag: str
    metrics: Dict[str, float]
    per_sample: List[Dict[str, Any]]
    problems: Dict[str, List[str]]
    n_total: int
    n_evaluated: int
    pred_dir: Path
    settings: Dict[str, Any] = field(default_factory=dict)
    unmatched: List[str] = field(default_factory=list)
    outputs: Dict[str, Path] = field(default_factory=dict)
    #: when nothing could be evaluated: why, naming one expected file and what the folder holds
    failure: str = ""

    @property
    def n_problems(self) -> int:
        return sum(len(v) for v in self.problems.values())

    def to_json(self) -> Dict[str, Any]:
        """A JSON-serialisable dictionary (``nan`` becomes ``null``)."""

        def clean(v: Any) -> Any:
            if isinstance(v, float) and not math.isfinite(v):
                return None
            if isinstance(v, Path):
                return str(v)
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            if isinstance(v, (list, tuple)):
                return [clean(x) for x in v]
            return v

        return clean({
            "task": self.task,
            "tag": self.tag,
            "pred_dir": self.pred_dir,
            "settings": self.settings,
            "counts": {
                "total": self.n_total,
                "evaluated": self.n_evaluated,
                **{k: len(self.problems.get(k, [])) for k in PROBLEM_KINDS},
                "unmatched_predictions": len(self.unmatched),
            },
            "problems": {k: list(self.problems.get(k, [])) for k in PROBLEM_KINDS},
            "unmatched_predictions": self.unmatched,
            "metrics": self.metrics,
        })


# ------------------------------------------------------------------------------------------------
# prediction files
# ------------------------------------------------------------------------------------------------
def find_eval_dir(pred_path: Path | str, dataset: Optional[str] = None) -> Path:
    """The folder holding the ``<id>.npz`` predictions under ``pred_path``.

    Looks, in order, at ``pred_path`` itself when it is named ``eval``, ``pred_path/<dataset>/eval``,
    ``pred_path/eval``, then every folder named ``eval`` below ``pred_path`` (exactly one must hold
    ``.npz`` files). Raises ``FileNotFoundError`` / ``ValueError`` (ambiguous) naming ``pred_path``.
    """
    root = Path(pred_path)
    if not root.is_dir():
        raise FileNotFoundError(f"--pred_path: folder not found: {root}")
    if root.name == "eval":
        return root
    candidates = ([root / dataset / "eval"] if dataset else []) + [root / "eval"]
    for c in candidates:
        if c.is_dir():
            return c
    found = sorted(p for p in root.rglob("eval") if p.is_dir() and any(p.glob("*.npz")))
    if len(found) == 1:
        return found[0]
    if not found:
        raise FileNotFoundError(
            f"--pred_path: no 'eval' folder with .npz predictions under {root} "
            "(run inference.py with --generate_eval)"
        )
    listing = ", ".join(str(p) for p in found[:6])
    raise ValueError(f"--pred_path: several 'eval' folders under {root} ({listing}); point --pred_path at one of them")


def _squeeze_leading(a: np.ndarray, ndim: int) -> np.ndarray:
    while a.ndim > ndim and a.shape[0] == 1:
        a = a[0]
    return a


def load_prediction(path: Path, task: str, sample_id: str,
                    expected_hw: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """Read one prediction file; depth -> float32 ``[H, W]``, normals -> float32 ``[3, H, W]``.

    Raises :class:`PredictionProblem` (``missing``, ``unreadable``, ``bad_dtype``, ``bad_shape``,
    ``nonfinite``). Nothing is resized: a size other than ``expected_hw``, or an empty array, is a
    ``bad_shape`` problem; a complex or non-numeric array is ``bad_dtype``; a value that is not finite in
    float32 (NaN, inf, or beyond the float32 range) is ``nonfinite``.
    """
    path = Path(path)
    if not path.is_file():
        raise PredictionProblem("missing", sample_id, path, "file not found")
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.ndarray):  # a plain .npy saved under the .npz name
            arr = data
        else:
            with data:
                if "arr_0" not in data.files:
                    raise PredictionProblem("unreadable", sample_id, path, f"no key 'arr_0' (keys: {data.files})")
                arr = np.asarray(data["arr_0"])
    except PredictionProblem:
        raise
    except Exception as exc:  # corrupt zip, truncated file, pickled object...
        raise PredictionProblem("unreadable", sample_id, path, f"{type(exc).__name__}: {exc}") from exc
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise PredictionProblem("bad_dtype", sample_id, path, f"array of dtype {arr.dtype}; a real-valued array is expected")
    if arr.size == 0:
        raise PredictionProblem("bad_shape", sample_id, path, f"empty array of shape {arr.shape}")
    if task == "normals":
        arr = _squeeze_leading(arr, 3)
        if arr.ndim == 3 and arr.shape[0] == 3:
            pass
        elif arr.ndim == 3 and arr.shape[-1] == 3:
            arr = np.moveaxis(arr, -1, 0)
        else:
            raise PredictionProblem("bad_shape", sample_id, path, f"normals must be [3, H, W] or [H, W, 3], got {arr.shape}")
        hw = tuple(arr.shape[1:])
    else:
        arr = _squeeze_leading(arr, 2)
        if arr.ndim != 2:
            raise PredictionProblem("bad_shape", sample_id, path, f"depth must be [H, W], got {arr.shape}")
        hw = tuple(arr.shape)
    if expected_hw is not None and hw != tuple(expected_hw):
        raise PredictionProblem("bad_shape", sample_id, path,
                                f"size {hw} (H, W) differs from the ground truth {tuple(expected_hw)}")
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.ascontiguousarray(arr, dtype=np.float32)  # values beyond the float32 range become inf
    finite = np.isfinite(out)
    if not finite.all():
        bad = int((~finite).sum())
        raise PredictionProblem("nonfinite", sample_id, path, f"{bad} NaN/inf value(s) (in float32)")
    return torch.from_numpy(out)


def load_prediction_mask(path: Path, sample_id: str, expected_hw: Tuple[int, int]) -> torch.Tensor:
    """The prediction's validity mask (``mask`` key of ``inference.py --generate_eval`` files), bool ``[H, W]``.

    Raises :class:`PredictionProblem` (``unreadable`` when the file has no ``mask``, ``bad_shape``).
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            if isinstance(data, np.ndarray) or "mask" not in data.files:
                raise PredictionProblem("unreadable", sample_id, path,
                                        "no 'mask' array (write predictions with inference.py --generate_eval)")
            arr = np.asarray(data["mask"])
    except PredictionProblem:
        raise
    except Exception as exc:
        raise PredictionProblem("unreadable", sample_id, path, f"{type(exc).__name__}: {exc}") from exc
    arr = _squeeze_leading(arr, 2)
    if arr.shape != tuple(expected_hw):
        raise PredictionProblem("bad_shape", sample_id, path,
                                f"mask size {arr.shape} differs from the depth size {tuple(expected_hw)}")
    return torch.from_numpy(arr.astype(bool))


# ------------------------------------------------------------------------------------------------
# datasets
# ------------------------------------------------------------------------------------------------
def _open_dataset(dataset: Any, data_path: Optional[Path | str], split: str, scenes: str):
    """A dataset object: a name goes through ``pager.data.build_dataset``, an object is used as is."""
    if not isinstance(dataset, str):
        return dataset
    if data_path is None:
        raise ValueError("--data_path is required with --dataset")
    from pager.data import build_dataset

    return build_dataset(dataset, data_path, split=split, scenes=scenes)


def _dataset_ids(ds: Any) -> Optional[List[str]]:
    """Sample ids without decoding anything, when the dataset lists records (``PanoramaDataset``)."""
    records = getattr(ds, "records", None)
    if records is not None:
        return [str(r.id) for r in records]
    ids = getattr(ds, "ids", None)
    return [str(i) for i in ids] if ids is not None else None


def _dataset_reference_ids(ds: Any) -> Optional[List[Optional[str]]]:
    """The ids the original PaGeR dataloaders give the same samples (``SampleRecord.reference_id``), or None."""
    records = getattr(ds, "records", None)
    if records is None:
        return getattr(ds, "reference_ids", None)
    return [None if getattr(r, "reference_id", None) is None else str(r.reference_id) for r in records]


def match_predictions(eval_dir: Path, ids: Sequence[str],
                      reference_ids: Optional[Sequence[Optional[str]]] = None) -> Tuple[List[Optional[Path]], List[str]]:
    """Pair samples with prediction files ``eval_dir/<name>.npz``, by our sample id or the original's.

    A sample's prediction may be named with our id (``inference.py`` here) or with the id the original
    PaGeR dataloader returns (``reference_ids[i]``, how the original ``inference.py --generate_eval`` names
    its files). Returns ``(path or None per sample, sorted names of .npz files matching no sample)``.

    Raises:
        ValueError: a file matches two samples (naming the file and both samples), or a sample has two
            prediction files (naming both files).
    """
    files = {p.stem: p for p in eval_dir.glob("*.npz") if p.is_file()}
    owner: Dict[str, int] = {}
    paths: List[Optional[Path]] = []
    for i, sid in enumerate(ids):
        names = [sid]
        ref = reference_ids[i] if reference_ids is not None else None
        if ref is not None and ref != sid:
            names.append(ref)
        found = []
        for name in names:
            if name not in files:
                continue
            if name in owner and owner[name] != i:
                raise ValueError(f"prediction file {files[name]} matches two samples: {ids[owner[name]]} and {sid} "
                                 "(the original dataloader gives them the same id); rename it to one sample's id")
            owner[name] = i
            found.append(files[name])
        if len(found) > 1:
            raise ValueError(f"sample {sid} has two prediction files, {found[0]} and {found[1]}; keep one")
        paths.append(found[0] if found else None)
    unmatched = sorted(name for name in files if name not in owner)
    return paths, unmatched


def _nothing_evaluated(eval_dir: Path, ids: Optional[Sequence[str]], reference_ids: Optional[Sequence[Optional[str]]],
                       problems: Dict[str, List[str]], dataset_name: Optional[str]) -> str:
    """Why nothing could be evaluated: one expected file name and what the folder holds."""
    found = sorted(p.name for p in eval_dir.glob("*.npz"))
    if ids:
        expected = f"{eval_dir / (ids[0] + '.npz')}"
        ref = reference_ids[0] if reference_ids else None
        if ref is not None and ref != ids[0]:
            expected += f" (or {ref}.npz, the original dataloader's id)"
    else:
        expected = f"{eval_dir}/<sample id>.npz"
    held = (f"{len(found)} .npz file(s) there, e.g. {', '.join(found[:3])}" if found
            else f"no .npz file there")
    counts = ", ".join(f"{len(v)} {k}" for k, v in problems.items() if v)
    listed = f"{len(ids)} sample(s) of {dataset_name or 'the dataset'}" if ids is not None else "the samples"
    return (f"no prediction could be evaluated for {listed}: expected e.g. {expected}; found {held}"
            + (f"; problems: {counts}" if counts else ""))


def _dataset_name(ds: Any, fallback: Optional[str]) -> Optional[str]:
    return getattr(ds, "NAME", None) or getattr(ds, "name", None) or fallback


def _locate(pred_path: Path | str, data_path: Optional[Path | str], dataset: Any, split: str, scenes: str,
            output_dir: Optional[Path | str]) -> Tuple[Any, Optional[str], Path, Path]:
    """``(dataset object, dataset name, eval folder of the predictions, output folder)`` of a runner."""
    ds = _open_dataset(dataset, data_path, split, scenes)
    name = _dataset_name(ds, dataset if isinstance(dataset, str) else None)
    eval_dir = find_eval_dir(pred_path, name)
    return ds, name, eval_dir, Path(output_dir) if output_dir is not None else eval_dir.parent


def report_paths(out_dir: Path | str, tag: str) -> Tuple[Path, Path, Path]:
    """``(txt, json, csv)`` report files of a run with ``tag`` in ``out_dir``."""
    out_dir = Path(out_dir)
    stem = f"evaluation_metrics_{tag}"
    return out_dir / f"{stem}.txt", out_dir / f"{stem}.json", out_dir / f"evaluation_per_sample_{tag}.csv"


def _check_planned(out_dir: Path, tag: str, write: bool, overwrite: bool, ds: Any = None,
                   maps_dir: Optional[Path] = None, maps_every: int = 1) -> None:
    """Check every file the run will write (reports, error maps) before any sample is read."""
    planned: List[Path] = list(report_paths(out_dir, tag)) if write else []
    if maps_dir is not None:
        ids = _dataset_ids(ds)
        if ids is not None:  # otherwise each map is checked when it is written
            planned += [maps_dir / f"{sid}.png" for i, sid in enumerate(ids) if i % maps_every == 0]
    if planned:
        check_outputs(planned, overwrite=overwrite, what="evaluation output")


class SkipBadSamples(torch.utils.data.Dataset):
    """``--skip_bad_samples``: a dataset whose unreadable ground-truth sample ``i`` becomes
    ``{"id": <its id>, "bad_sample": <reason>}`` (never another sample); the runners count it as a
    ``bad_sample`` problem. Other attributes are those of the wrapped dataset."""

    def __init__(self, ds: Any) -> None:
        self.ds = ds

    def __getattr__(self, name: str) -> Any:
        if name == "ds":
            raise AttributeError(name)
        return getattr(self.ds, name)

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        get = getattr(self.ds, "get_sample", self.ds.__getitem__)
        try:
            return get(i)
        except (OSError, ValueError, KeyError) as exc:
            records = getattr(self.ds, "records", None)
            sid = records[i].id if records is not None else str(i)
            return {"id": sid, "bad_sample": str(exc)}


def _iter_samples(ds: Any, indices: Sequence[int], num_workers: int) -> Iterable[Dict[str, Any]]:
    """Yield ``ds[i]`` for ``indices`` (optionally decoded by DataLoader workers, order kept)."""
    if num_workers <= 0:
        for i in indices:
            yield ds[i]
        return
    from torch.utils.data import DataLoader, Subset

    loader = DataLoader(Subset(ds, list(indices)), batch_size=None, shuffle=False, num_workers=num_workers)
    yield from loader


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


# ------------------------------------------------------------------------------------------------
# error maps
# ------------------------------------------------------------------------------------------------
def render_error_map(error: torch.Tensor | np.ndarray, mask: torch.Tensor | np.ndarray | None = None, *,
                     signed: bool = True, cmap: Optional[str] = None, vmax: Optional[float] = None,
                     label: str = "") -> bytes:
    """PNG bytes of an error map ``[H, W]`` with a colour bar strip and its range printed below.

    ``signed=True``: diverging ``seismic`` colormap centred on 0, range ``[-vmax, vmax]`` (default
    ``vmax`` = largest absolute error over ``mask``): red = prediction too far, blue = too close.
    ``signed=False``: sequential ``magma`` over ``[0, vmax]``. Pixels outside ``mask`` are grey.
    """
    from matplotlib import colormaps
    from PIL import Image, ImageDraw

    e = error.detach().float().cpu().numpy() if isinstance(error, torch.Tensor) else np.asarray(error, np.float32)
    e = _squeeze_leading(e, 2)
    if e.ndim != 2:
        raise ValueError(f"error map must be [H, W], got {e.shape}")
    m = np.ones(e.shape, bool) if mask is None else _squeeze_leading(
        mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask), 2).astype(bool)
    if m.shape != e.shape:
        raise ValueError(f"error map mask must be {e.shape}, got {m.shape}")
    vals = np.abs(e[m & np.isfinite(e)])
    if vmax is None:
        vmax = float(vals.max()) if vals.size else 1.0
    vmax = vmax if vmax > 0 else 1.0
    cm = colormaps[cmap or ("seismic" if signed else "magma")]
    x = (e / vmax + 1.0) / 2.0 if signed else e / vmax
    rgb = (cm(np.clip(np.nan_to_num(x), 0.0, 1.0))[..., :3] * 255).astype(np.uint8)
    rgb[~m] = 128
    h, w = e.shape
    bar_h = max(6, h // 32)
    text_h = 28 if label else 14
    ramp = np.linspace(0.0, 1.0, w)[None, :].repeat(bar_h, 0)
    bar = (cm(ramp)[..., :3] * 255).astype(np.uint8)
    canvas = np.full((h + bar_h + text_h, w, 3), 255, np.uint8)
    canvas[:h] = rgb
    canvas[h:h + bar_h] = bar
    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    y = h + bar_h + 1
    lo, hi = (f"{-vmax:.3g}" if signed else "0"), f"{vmax:.3g}"
    draw.text((2, y), lo, fill=(0, 0, 0))
    draw.text((max(2, w - 6 * len(hi) - 2), y), hi, fill=(0, 0, 0))
    if signed and w > 12 * (len(lo) + len(hi)):
        draw.text((w // 2 - 3, y), "0", fill=(0, 0, 0))
    if label:
        draw.text((2, y + 13), label, fill=(0, 0, 0))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------
# the generic loop
# ------------------------------------------------------------------------------------------------
SampleFn = Callable[[int, Dict[str, Any], torch.Tensor], Dict[str, float]]


def _run_loop(*, task: str, tag: str, ds: Any, dataset_name: Optional[str], eval_dir: Path,
              pred_kind: str, per_sample_fn: SampleFn, metric_keys: Sequence[str], strict: bool,
              num_workers: int, settings: Dict[str, Any], check_shape: bool = True,
              undefined_ok: Sequence[str] = (), with_mask: bool = False) -> EvaluationResult:
    """Pair every sample of ``ds`` with ``eval_dir/<id>.npz``, evaluate, collect problems.

    ``undefined_ok``: metrics that may be ``nan`` for an image (undefined there, e.g. the IoU of invalid pixels
    on an image that has none; skipped by the average) instead of making it a ``nonfinite_metric`` problem.
    ``with_mask``: also read the prediction's ``mask`` (:func:`load_prediction_mask`) and pass it to
    ``per_sample_fn`` as a fourth argument.
    """
    from tqdm.auto import tqdm

    problems: Dict[str, List[str]] = {k: [] for k in PROBLEM_KINDS}
    rows: List[Dict[str, Any]] = []
    per_metric: Dict[str, List[float]] = {k: [] for k in metric_keys}

    def report(p: PredictionProblem) -> None:
        if strict:
            raise ValueError(f"--strict: {p}") from p
        problems[p.kind].append(p.sample_id)
        logger.warning("%s", p)
        rows.append({"id": p.sample_id, "status": p.kind, "detail": p.detail})

    ids = _dataset_ids(ds)
    reference_ids = _dataset_reference_ids(ds) if ids is not None else None
    pred_paths: Dict[int, Path] = {}
    unmatched: List[str] = []
    if ids is not None:
        # check the files first: missing predictions never cost a decoded ground-truth sample
        matched, unmatched = match_predictions(eval_dir, ids, reference_ids)
        present = []
        for i, (sid, path) in enumerate(zip(ids, matched)):
            if path is not None:
                present.append(i)
                pred_paths[i] = path
            else:
                report(PredictionProblem("missing", sid, eval_dir / f"{sid}.npz", "file not found"))
        indices = present
        n_total = len(ids)
    else:
        indices = list(range(len(ds)))
        n_total = len(ds)

    known_ids = set(ids) if ids is not None else set()
    bar = tqdm(total=len(indices), desc=f"Evaluating {task}" + (f" on {dataset_name}" if dataset_name else ""),
               unit="sample", dynamic_ncols=True)
    try:
        for idx, sample in zip(indices, _iter_samples(ds, indices, num_workers)):
            sid = str(sample["id"])
            known_ids.add(sid)
            path = pred_paths.get(idx, eval_dir / f"{sid}.npz")
            if "bad_sample" in sample:  # --skip_bad_samples: unreadable ground truth
                report(PredictionProblem("bad_sample", sid, path, f"ground truth skipped: {sample['bad_sample']}"))
                bar.update(1)
                continue
            try:
                hw = tuple(sample["depth"].shape[-2:]) if (check_shape and "depth" in sample) else None
                pred = load_prediction(path, pred_kind, sid, hw)
                if pred_kind == "normals" and path.stem != sid:
                    # named the original's way: written in the original's frame (z mirrored relative to ours)
                    pred = pred * pred.new_tensor([1.0, 1.0, -1.0]).view(3, 1, 1)
                if with_mask:
                    values = per_sample_fn(idx, sample, pred, load_prediction_mask(path, sid, tuple(pred.shape[-2:])))
                else:
                    values = per_sample_fn(idx, sample, pred)
                bad = [k for k in metric_keys
                       if k not in undefined_ok and not math.isfinite(float(values.get(k, float("nan"))))]
                if bad:
                    raise PredictionProblem("nonfinite_metric", sid, path,
                                            "metric(s) " + ", ".join(f"{k}={values.get(k)}" for k in bad) + " not finite")
            except PredictionProblem as p:
                report(p if p.path == path else PredictionProblem(p.kind, p.sample_id, path, p.detail))
                bar.update(1)
                continue
            for k in metric_keys:
                per_metric[k].append(values.get(k, float("nan")))
            rows.append({"id": sid, "status": "ok", **values})
            bar.update(1)
            first = metric_keys[0]
            bar.set_postfix({first: f"{float(np.nanmean(per_metric[first])):.4f}"} if per_metric[first] else {})
    finally:
        bar.close()

    averaged = M.average_over_images({k: v for k, v in per_metric.items()})
    n_eval = sum(1 for r in rows if r["status"] == "ok")
    if any(len(v) != n_eval for v in per_metric.values()):  # pragma: no cover - bookkeeping guard
        raise RuntimeError("evaluation bookkeeping: metric lists differ from the number of evaluated samples")
    order = {sid: i for i, sid in enumerate(ids)} if ids is not None else {}
    rows.sort(key=lambda r: order.get(r["id"], len(order)))
    failure = ""
    if n_eval == 0 or not all(math.isfinite(v) for k, v in averaged.items() if k not in undefined_ok):
        failure = _nothing_evaluated(eval_dir, ids, reference_ids, problems, dataset_name)
    return EvaluationResult(task=task, tag=tag, metrics=averaged, per_sample=rows, problems=problems,
                            n_total=n_total, n_evaluated=n_eval, pred_dir=eval_dir,
                            settings={"dataset": dataset_name, **settings}, unmatched=unmatched, failure=failure)


def _to_device(x: torch.Tensor, device: str) -> torch.Tensor:
    return x.to(device=device, non_blocking=True)


def _empty_mask(sid: str, eval_dir: Path) -> PredictionProblem:
    return PredictionProblem("empty_mask", sid, eval_dir / f"{sid}.npz", "no valid ground-truth pixel")


def _item(d: Dict[str, torch.Tensor]) -> Dict[str, float]:
    return {k: float(v.reshape(-1)[0]) for k, v in d.items()}


# ------------------------------------------------------------------------------------------------
# runners
# ------------------------------------------------------------------------------------------------
def evaluate_depth(pred_path: Path | str, data_path: Optional[Path | str], dataset: Any,
                   alignment_type: str = "metric", *, split: str = "test", scenes: str = "both",
                   strict: bool = False, latitude_weighting: bool = False, max_depth: Optional[float] = None,
                   clip_pred: bool = False, save_error_maps: bool = False, error_maps_saving_frequency: int = 1,
                   output_dir: Optional[Path | str] = None, device: Optional[str] = None,
                   num_workers: int = 0, invalid_mask_iou: bool = False, write: bool = True,
                   overwrite: bool = False) -> EvaluationResult:
    """Depth evaluation of ``<pred_path>/**/eval/<id>.npz`` against a dataset split.

    Per sample: the ground truth ``depth [1, H, W]`` (metres) over ``eval_mask`` (the dataset's
    valid range ``(1.01 min, 0.99 max)`` and its evaluation band of rows; ``max_depth`` further
    restricts it to ``gt <= max_depth``), the prediction aligned with ``alignment_type``
    (:data:`metrics.ALIGNMENT_TYPES`) over those pixels, optionally clipped to
    ``[min_depth, max_depth]`` (``clip_pred``; the reference does not clip), then
    :func:`metrics.depth_metrics`. ``dataset``: a registry name or a dataset object.
    ``invalid_mask_iou``: also :func:`metrics.invalid_mask_metrics` of the prediction's ``mask`` (saved
    by ``inference.py --generate_eval``: depth not saturated) against the ground truth's ``mask`` (all
    rows: sky and beyond-range pixels are invalid), averaged over the images where they are defined.
    """
    if alignment_type not in M.ALIGNMENT_TYPES:
        raise ValueError(f"--alignment_type: unknown {alignment_type!r}, expected one of {', '.join(M.ALIGNMENT_TYPES)}")
    if error_maps_saving_frequency < 1:
        raise ValueError(f"--error_maps_saving_frequency must be >= 1, got {error_maps_saving_frequency}")
    device = device or _default_device()
    ds, name, eval_dir, out_dir = _locate(pred_path, data_path, dataset, split, scenes, output_dir)
    tag = alignment_type
    maps_dir = out_dir / f"error_maps_{tag}"
    _check_planned(out_dir, tag, write, overwrite, ds, maps_dir if save_error_maps else None, error_maps_saving_frequency)

    def per_sample(idx: int, sample: Dict[str, Any], pred: torch.Tensor,
                   pred_valid: Optional[torch.Tensor] = None) -> Dict[str, float]:
        sid = str(sample["id"])
        gt = _to_device(sample["depth"].float(), device).reshape(1, 1, *sample["depth"].shape[-2:])
        mask = _to_device(sample.get("eval_mask", sample["mask"]), device).reshape(gt.shape).bool()
        lo = float(sample.get("min_depth", 0.0))
        hi = float(sample.get("max_depth", float("inf")))
        if max_depth is not None:
            mask = mask & (gt <= max_depth)
            hi = min(hi, float(max_depth))
        if not bool(mask.any()):
            raise _empty_mask(sid, eval_dir)
        p = _to_device(pred, device).reshape(gt.shape)
        try:
            aligned, scale, shift = M.align_prediction(p, gt, mask, alignment_type, return_coefficients=True)
        except ValueError as exc:  # e.g. log_shift of a prediction with non-positive depth
            raise PredictionProblem("alignment_failed", sid, eval_dir / f"{sid}.npz", str(exc)) from exc
        if clip_pred:
            aligned = aligned.clamp(lo, hi)
        values = _item(M.depth_metrics(aligned, gt, mask, latitude_weighting=latitude_weighting))
        values["n_valid"] = int(mask.sum())
        if pred_valid is not None:
            gt_valid = sample["mask"].reshape(gt.shape[-2:]).bool()
            values.update(_item(M.invalid_mask_metrics(pred_valid, gt_valid, latitude_weighting=latitude_weighting)))
        values["align_scale"] = float(scale.reshape(-1)[0])
        values["align_shift"] = float(shift.reshape(-1)[0])
        if save_error_maps and idx % error_maps_saving_frequency == 0:
            png = render_error_map(aligned - gt, mask, signed=True, label=f"{sid}: pred - gt [m] ({tag})")
            with atomic_write(maps_dir / f"{sid}.png", overwrite=overwrite) as fh:
                fh.write(png)
        return values

    settings = {"split": split, "scenes": scenes, "alignment_type": alignment_type,
                "latitude_weighting": latitude_weighting, "max_depth": max_depth, "clip_pred": clip_pred,
                "strict": strict, "invalid_mask_iou": invalid_mask_iou}
    keys = M.DEPTH_METRICS + (M.INVALID_MASK_METRICS if invalid_mask_iou else ())
    result = _run_loop(task="depth", tag=tag, ds=ds, dataset_name=name, eval_dir=eval_dir, pred_kind="depth",
                       per_sample_fn=per_sample, metric_keys=keys, strict=strict,
                       num_workers=num_workers, settings=settings, undefined_ok=M.INVALID_MASK_METRICS,
                       with_mask=invalid_mask_iou)
    if write:
        write_outputs(result, out_dir, overwrite=overwrite)
    return result


def evaluate_normals(pred_path: Path | str, data_path: Optional[Path | str], dataset: Any, *,
                     split: str = "test", scenes: str = "both", strict: bool = False,
                     latitude_weighting: bool = False, save_error_maps: bool = False,
                     error_maps_saving_frequency: int = 1, output_dir: Optional[Path | str] = None,
                     device: Optional[str] = None, num_workers: int = 0, write: bool = True,
                     overwrite: bool = False) -> EvaluationResult:
    """Surface-normals evaluation (:func:`metrics.normals_metrics`) against the dataset's ``normals``.

    Valid pixels: the sample's ``eval_mask`` where the ground-truth normal is non-zero. Predictions
    are normalised to unit length and must be in the library's world frame, except files named with the
    original dataloader's id (written by the original code), which are read in its frame (z mirrored).
    """
    if error_maps_saving_frequency < 1:
        raise ValueError(f"--error_maps_saving_frequency must be >= 1, got {error_maps_saving_frequency}")
    device = device or _default_device()
    ds, name, eval_dir, out_dir = _locate(pred_path, data_path, dataset, split, scenes, output_dir)
    maps_dir = out_dir / "error_maps_normals"
    _check_planned(out_dir, "normals", write, overwrite, ds, maps_dir if save_error_maps else None,
                   error_maps_saving_frequency)

    def per_sample(idx: int, sample: Dict[str, Any], pred: torch.Tensor) -> Dict[str, float]:
        sid = str(sample["id"])
        if "normals" not in sample:
            raise ValueError(f"{name}: sample {sid} has no ground-truth normals; this dataset cannot be used "
                             "for normals evaluation")
        gt = _to_device(sample["normals"].float(), device).unsqueeze(0)
        mask = _to_device(sample.get("eval_mask", sample["mask"]), device).reshape(1, *gt.shape[-2:]).bool()
        mask = mask & (gt.norm(dim=1) > 0)
        if not bool(mask.any()):
            raise _empty_mask(sid, eval_dir)
        p = _to_device(pred, device).unsqueeze(0)
        values = _item(M.normals_metrics(p, gt, mask, latitude_weighting=latitude_weighting))
        values["n_valid"] = int(mask.sum())
        if save_error_maps and idx % error_maps_saving_frequency == 0:
            pn = torch.nn.functional.normalize(p, dim=1)
            gn = torch.nn.functional.normalize(gt, dim=1)
            ang = torch.rad2deg(torch.atan2(torch.linalg.cross(pn, gn, dim=1).norm(dim=1), (pn * gn).sum(dim=1)))
            png = render_error_map(ang[0], mask[0], signed=False, vmax=45.0, label=f"{sid}: angular error [deg]")
            with atomic_write(maps_dir / f"{sid}.png", overwrite=overwrite) as fh:
                fh.write(png)
        return values

    settings = {"split": split, "scenes": scenes, "latitude_weighting": latitude_weighting, "strict": strict}
    result = _run_loop(task="normals", tag="normals", ds=ds, dataset_name=name, eval_dir=eval_dir,
                       pred_kind="normals", per_sample_fn=per_sample, metric_keys=M.NORMALS_METRICS,
                       strict=strict, num_workers=num_workers, settings=settings)
    if write:
        write_outputs(result, out_dir, overwrite=overwrite)
    return result


def evaluate_edges(pred_path: Path | str, data_path: Optional[Path | str], dataset: Any, *,
                   split: str = "test", scenes: str = "both", strict: bool = False,
                   dbe_max_distance: Optional[float] = None, edge_threshold: float = 0.01,
                   dilation: int = 3, completeness: str = "reference", output_dir: Optional[Path | str] = None,
                   device: Optional[str] = None, num_workers: int = 0, write: bool = True,
                   overwrite: bool = False) -> EvaluationResult:
    """Depth-edge evaluation (:func:`metrics.edge_metrics`) of depth predictions.

    ``dbe_max_distance`` (pixels) defaults to the sample's ``max_depth``, as the reference does
    (it passes the dataset's maximum depth as the distance cap); Koch et al. use 10.
    """
    device = device or _default_device()
    ds, name, eval_dir, out_dir = _locate(pred_path, data_path, dataset, split, scenes, output_dir)
    _check_planned(out_dir, "edges", write, overwrite)

    def per_sample(idx: int, sample: Dict[str, Any], pred: torch.Tensor) -> Dict[str, float]:
        sid = str(sample["id"])
        gt = _to_device(sample["depth"].float(), device).reshape(1, *sample["depth"].shape[-2:])
        mask = _to_device(sample.get("eval_mask", sample["mask"]), device).reshape(gt.shape).bool()
        if not bool(mask.any()):
            raise _empty_mask(sid, eval_dir)
        cap = dbe_max_distance if dbe_max_distance is not None else float(sample.get("max_depth", 10.0))
        values = _item(M.edge_metrics(_to_device(pred, device).reshape(gt.shape), gt, mask, max_distance=cap,
                                      threshold=edge_threshold, dilation=dilation, completeness=completeness))
        values["n_valid"] = int(mask.sum())
        return values

    settings = {"split": split, "scenes": scenes, "dbe_max_distance": dbe_max_distance,
                "edge_threshold": edge_threshold, "dilation": dilation, "completeness": completeness,
                "strict": strict}
    result = _run_loop(task="edges", tag="edges", ds=ds, dataset_name=name, eval_dir=eval_dir, pred_kind="depth",
                       per_sample_fn=per_sample, metric_keys=M.EDGE_METRICS, strict=strict,
                       num_workers=num_workers, settings=settings)
    if write:
        write_outputs(result, out_dir, overwrite=overwrite)
    return result


class _PredictionsOnly:
    """Stand-in dataset for seam evaluation without ground truth: one id per ``.npz`` file."""

    def __init__(self, eval_dir: Path, ids: Optional[List[str]] = None,
                 reference_ids: Optional[List[Optional[str]]] = None) -> None:
        self.ids = sorted(p.stem for p in eval_dir.glob("*.npz")) if ids is None else list(ids)
        self.reference_ids = reference_ids
        if not self.ids:
            raise FileNotFoundError(f"no .npz predictions in {eval_dir}")

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        return {"id": self.ids[i]}


def evaluate_seams(pred_path: Path | str, data_path: Optional[Path | str] = None, dataset: Any = None, *,
                   split: str = "test", scenes: str = "both", strict: bool = False,
                   pixel_jump_thresh: float = 0.010, edge_mean_jump_thresh: float = 0.008,
                   min_broken_pixel_frac: float = 0.05, compensate_interior: bool = True, tolerance: int = 1,
                   with_ground_truth: bool = False,
                   output_dir: Optional[Path | str] = None, device: Optional[str] = None,
                   write: bool = True, overwrite: bool = False) -> EvaluationResult:
    """Cube-seam evaluation (:func:`metrics.seam_metrics`) of ERP depth predictions.

    Needs no ground truth: without ``dataset`` every ``.npz`` of the eval folder is evaluated; with
    one, its split's ids say which predictions must exist (missing ones are reported). No mask is
    applied (as the reference).

    ``with_ground_truth`` (needs ``dataset``): the same metrics of the ground-truth depth as a baseline
    (``gt_<metric>``; a real scene's own depth crosses the cube borders with ordinary gradients, so its
    ``seam_gradient_ratio`` is about 1, not exactly 1); then both the prediction and the ground truth are
    evaluated over the ground truth's valid pixels (sky and beyond-range pixels have no true depth).
    """
    device = device or _default_device()
    name: Optional[str] = None
    ids: Optional[List[str]] = None
    reference_ids: Optional[List[Optional[str]]] = None
    if dataset is not None:
        ds, name, eval_dir, out_dir = _locate(pred_path, data_path, dataset, split, scenes, output_dir)
        ids = _dataset_ids(ds)
        if ids is None:
            ids = [str(ds[i]["id"]) for i in range(len(ds))]
        else:
            reference_ids = _dataset_reference_ids(ds)
    else:
        eval_dir = find_eval_dir(pred_path, None)
        out_dir = Path(output_dir) if output_dir is not None else eval_dir.parent
    if with_ground_truth and dataset is None:
        raise ValueError("seams: --with_ground_truth needs --data_path and --dataset")
    stand_in = ds if with_ground_truth else _PredictionsOnly(eval_dir, ids, reference_ids)
    _check_planned(out_dir, "seams", write, overwrite)
    options = dict(pixel_jump_thresh=pixel_jump_thresh, edge_mean_jump_thresh=edge_mean_jump_thresh,
                   min_broken_pixel_frac=min_broken_pixel_frac, compensate_interior=compensate_interior,
                   tolerance=tolerance)

    def per_sample(idx: int, sample: Dict[str, Any], pred: torch.Tensor) -> Dict[str, float]:
        if not with_ground_truth:
            return _item(M.seam_metrics(_to_device(pred, device), **options))
        gt = _to_device(sample["depth"].float(), device).reshape(sample["depth"].shape[-2:])
        mask = _to_device(sample["mask"], device).reshape(gt.shape).bool()
        if tuple(pred.shape[-2:]) != tuple(gt.shape):
            raise PredictionProblem("bad_shape", str(sample["id"]), eval_dir / f"{sample['id']}.npz",
                                    f"size {tuple(pred.shape[-2:])} differs from the ground truth {tuple(gt.shape)}")
        if not bool(mask.any()):
            raise _empty_mask(str(sample["id"]), eval_dir)
        values = _item(M.seam_metrics(_to_device(pred, device).reshape(gt.shape), mask, **options))
        values.update({f"gt_{k}": v for k, v in _item(M.seam_metrics(gt, mask, **options)).items()})
        return values

    settings = {"split": split if dataset is not None else None, "scenes": scenes if dataset is not None else None,
                "pixel_jump_thresh": pixel_jump_thresh, "edge_mean_jump_thresh": edge_mean_jump_thresh,
                "min_broken_pixel_frac": min_broken_pixel_frac, "compensate_interior": compensate_interior,
                "tolerance": tolerance, "with_ground_truth": with_ground_truth, "strict": strict}
    keys = M.SEAM_METRICS + (tuple(f"gt_{k}" for k in M.SEAM_METRICS) if with_ground_truth else ())
    result = _run_loop(task="seams", tag="seams", ds=stand_in, dataset_name=name, eval_dir=eval_dir,
                       pred_kind="depth", per_sample_fn=per_sample, metric_keys=keys, strict=strict,
                       num_workers=0, settings=settings, check_shape=False)  # seam metrics: nan is a problem
    if write:
        write_outputs(result, out_dir, overwrite=overwrite)
    return result


# ------------------------------------------------------------------------------------------------
# outputs
# ------------------------------------------------------------------------------------------------
def format_table(result: EvaluationResult) -> str:
    """The human-readable report of a run (what goes into ``evaluation_metrics_<tag>.txt``)."""
    s = result.settings
    lines = [f"PaGeR evaluation: {result.task}" + (f" (alignment: {s['alignment_type']})" if "alignment_type" in s else "")]
    if s.get("dataset"):
        lines.append(f"dataset      : {s['dataset']} (split {s.get('split')}, scenes {s.get('scenes')})")
    lines.append(f"predictions  : {result.pred_dir}")
    extras = {k: v for k, v in s.items() if k not in ("dataset", "split", "scenes", "alignment_type")}
    if extras:
        lines.append("settings     : " + ", ".join(f"{k}={v}" for k, v in extras.items()))
    counts = ", ".join(f"{len(result.problems[k])} {k}" for k in PROBLEM_KINDS)
    lines.append(f"samples      : {result.n_total} listed, {result.n_evaluated} evaluated; {counts}")
    if result.unmatched:
        lines.append(f"unmatched    : {len(result.unmatched)} prediction file(s) with no sample in the split")
    lines.append("")
    if result.failure:
        lines.append(f"FAILED: {result.failure}")
    else:
        width = max(len(k) for k in result.metrics) if result.metrics else 6
        lines.append(f"{'metric':<{width}}  value")
        lines.append("-" * (width + 12))
        for k, v in result.metrics.items():
            lines.append(f"{k:<{width}}  {v:.4f}")
    for kind in PROBLEM_KINDS:
        names = result.problems[kind]
        if names:
            lines.append("")
            lines.append(f"{kind} ({len(names)}): " + ", ".join(names))
    return "\n".join(lines) + "\n"


def write_outputs(result: EvaluationResult, out_dir: Path | str, overwrite: bool = False) -> Dict[str, Path]:
    """Write the txt table, the JSON summary and the per-sample CSV atomically into ``out_dir``.

    Existing files raise ``FileExistsError`` naming them unless ``overwrite``.
    """
    txt, js, cs = report_paths(out_dir, result.tag)
    if not overwrite:
        check_outputs([txt, js, cs], overwrite=False, what="evaluation output")
    with atomic_write(txt, "w", overwrite=overwrite) as fh:
        fh.write(format_table(result))
    with atomic_write(js, "w", overwrite=overwrite) as fh:
        json.dump(result.to_json(), fh, indent=2)
        fh.write("\n")
    keys: List[str] = ["id", "status"]
    for row in result.per_sample:
        for k in row:
            if k not in keys and k != "detail":
                keys.append(k)
    keys.append("detail")
    with atomic_write(cs, "w", overwrite=overwrite) as fh:
        writer = csv.DictWriter(fh, fieldnames=keys, restval="", lineterminator="\n")
        writer.writeheader()
        for row in result.per_sample:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    result.outputs = {"txt": txt, "json": js, "csv": cs}
    logger.info("wrote %s, %s and %s", txt, js, cs)
    return result.outputs


# ------------------------------------------------------------------------------------------------
# running a task from parsed arguments (the parsers and entry points: pager.evaluation.cli)
# ------------------------------------------------------------------------------------------------
def run_task(args: argparse.Namespace, task: str) -> EvaluationResult:
    """Run ``task`` with parsed arguments and return its result (files written)."""
    common = dict(strict=args.strict, output_dir=args.output_dir, device=args.device,
                  overwrite=bool(getattr(args, "overwrite", False)))
    if getattr(args, "skip_bad_samples", False) and args.dataset is not None:
        from pager.data import build_dataset

        if args.data_path is None:
            raise ValueError("--data_path is required with --dataset")
        args.dataset = SkipBadSamples(build_dataset(args.dataset, args.data_path, split=args.split, scenes=args.scenes))
    if task == "depth":
        return evaluate_depth(args.pred_path, args.data_path, args.dataset, args.alignment_type, split=args.split,
                              scenes=args.scenes, latitude_weighting=args.latitude_weighting,
                              max_depth=args.max_depth, clip_pred=args.clip_pred,
                              save_error_maps=args.save_error_maps,
                              error_maps_saving_frequency=args.error_maps_saving_frequency,
                              num_workers=args.num_workers, invalid_mask_iou=args.invalid_mask_iou, **common)
    if task == "normals":
        return evaluate_normals(args.pred_path, args.data_path, args.dataset, split=args.split, scenes=args.scenes,
                                latitude_weighting=args.latitude_weighting, save_error_maps=args.save_error_maps,
                                error_maps_saving_frequency=args.error_maps_saving_frequency,
                                num_workers=args.num_workers, **common)
    if task == "edges":
        return evaluate_edges(args.pred_path, args.data_path, args.dataset, split=args.split, scenes=args.scenes,
                              dbe_max_distance=args.dbe_max_distance, edge_threshold=args.edge_threshold,
                              completeness=args.completeness, num_workers=args.num_workers, **common)
    if task == "seams":
        if (args.dataset is None) != (args.data_path is None):
            raise ValueError("seams: give both --data_path and --dataset, or neither (predictions only)")
        return evaluate_seams(args.pred_path, args.data_path, args.dataset, split=args.split, scenes=args.scenes,
                              pixel_jump_thresh=args.pixel_jump_thresh,
                              edge_mean_jump_thresh=args.edge_mean_jump_thresh,
                              min_broken_pixel_frac=args.min_broken_pixel_frac,
                              compensate_interior=not args.no_interior_compensation,
                              tolerance=args.seam_tolerance, with_ground_truth=args.with_ground_truth, **common)
    raise ValueError(f"unknown evaluation task {task!r}, expected one of {TASKS}")


# the command line, re-exported (it lives in the torch-free pager.evaluation.cli so that --help is fast)
from pager.evaluation.cli import (  # noqa: E402
    add_arguments,
    add_parser,
    build_parser,
    depth_main,
    edges_main,
    main,
    normals_main,
    run,
    seams_main,
)
