"""Collect the held-out figures of one evaluation folder of ``scripts/train_default.sh`` into one JSON file.

    python scripts/default_model/collect_metrics.py EVAL_DIR OUT.json --label "v2"

``EVAL_DIR`` is what ``evaluate_heldout`` writes: ``depth_<scenes>/``, ``normals_<scenes>/``, ``seams_gt_<scenes>/``
(scenes ``both``, ``indoor``, ``outdoor``) and ``seams/``, each with the evaluation scripts' metrics JSON.
``pager/weights/default/metrics.json`` is this file for the shipped weights.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Dict

FILES = {"depth": "evaluation_metrics_log_shift.json", "normals": "evaluation_metrics_normals.json",
         "seams_gt": "evaluation_metrics_seams.json"}


def _metrics(path: Path) -> Dict[str, float]:
    if not path.is_file():
        raise SystemExit(f"collect_metrics: missing {path} (run the evaluation stage first)")
    return json.loads(path.read_text())["metrics"]


def collect(eval_dir: Path, label: str) -> Dict[str, Any]:
    def load(kind: str, scenes: str) -> Dict[str, float]:
        return _metrics(eval_dir / f"{kind}_{scenes}" / FILES[kind])

    def rounded(d: Dict[str, float]) -> Dict[str, float]:
        return {k: round(float(v), 4) for k, v in d.items()}

    out: Dict[str, Any] = {
        "model": label,
        "heldout": "100 procedural panoramas, pager synth --seed 900000 --height 256 --num 100 --scenes both "
                   "(50 indoor, 50 outdoor)",
        "depth_log_shift": rounded(load("depth", "both")),
        "normals": rounded(load("normals", "both")),
        "per_scene_type": {},
        "seams": {},
    }
    for scenes in ("indoor", "outdoor"):
        d, n = load("depth", scenes), load("normals", scenes)
        row = {"abs_rel": d["abs_rel"], "delta1": d["delta1"], "normals_median": n["median"]}
        if scenes == "outdoor":
            row.update({k: d[k] for k in ("invalid_iou", "invalid_precision", "invalid_recall") if k in d})
        out["per_scene_type"][scenes] = rounded(row)
    for scenes in ("both", "indoor", "outdoor"):
        out["seams"][scenes] = rounded({k: v for k, v in load("seams_gt", scenes).items() if "ratio" in k})
    out["seams"]["all_pixels_no_ground_truth"] = rounded(_metrics(eval_dir / "seams" / FILES["seams_gt"]))
    out["targets_issue_16"] = {"abs_rel": "<= 0.15 all, <= 0.20 indoor", "invalid_iou": ">= 0.90",
                               "normals_median": "<= 8 deg", "seam_gradient_ratio": "within 15 % of the ground truth's"}
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("eval_dir", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--label", default="default model")
    args = p.parse_args(argv)
    data = collect(args.eval_dir, args.label)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, args.out)  # atomic
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
