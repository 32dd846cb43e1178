"""evaluation/video_evaluation.py: pager video outputs and --predict against procedural sequences with true poses."""
import json
import math

import numpy as np
import pytest

from pager.data.synthetic.sequence import list_sequences, write_sequences
from pager.evaluation.video_runner import main


@pytest.fixture(scope="module")
def seqs(tmp_path_factory):
    root = tmp_path_factory.mktemp("seq") / "SyntheticVideo"
    write_sequences(root, num=2, frames=4, height=24, motion="both", progress=False)
    return root


def write_prediction(folder, depth, mask):
    folder.mkdir(parents=True)
    np.save(folder / "depth.npy", depth.astype(np.float32))
    np.save(folder / "depth_mask.npy", mask)


def test_true_depth_scores_perfectly_and_a_scaled_frame_flickers(seqs, tmp_path):
    preds = tmp_path / "preds"
    for seq in list_sequences(seqs):
        frames = [seq.load(i) for i in range(len(seq))]
        depth = np.stack([f["depth"] for f in frames]) * 2.0  # relative: one wrong scale for all frames
        depth[2] *= 1.5 if seq.kind == "indoor" else 1.0
        write_prediction(preds / seq.folder.name, depth, np.stack([f["mask"] for f in frames]))
    out = tmp_path / "r.json"
    assert main(["--data_path", str(seqs), "--pred_path", str(preds), "--output", str(out)]) == 0
    rows = json.loads(out.read_text())["prediction"]["sequences"]
    indoor = next(v for k, v in rows.items() if k.startswith("indoor"))
    outdoor = next(v for k, v in rows.items() if k.startswith("outdoor"))
    assert outdoor["abs_rel"] < 1e-6 and outdoor["abs_rel_seq"] < 1e-6 and outdoor["flicker"] < 0.02
    assert indoor["abs_rel"] < 1e-6  # per-frame alignment removes any frame's scale
    # 2 of the 3 pairs see the 1.5x frame: mean flicker ~ 2/3 log 1.5 (+ the interpolation floor)
    assert abs(indoor["flicker"] - 2 / 3 * math.log(1.5)) < 0.02
    assert indoor["abs_rel_seq"] > 0.1


def test_missing_prediction_is_named(seqs, tmp_path, capsys):
    assert main(["--data_path", str(seqs), "--pred_path", str(tmp_path)]) == 2
    assert "depth.npy" in capsys.readouterr().err


def test_predict_compares_independent_aligned_and_filtered(seqs, tmp_path):
    from pager.model.tiny import build_tiny_checkpoint

    ck = build_tiny_checkpoint(tmp_path / "depth", "depth")
    out = tmp_path / "r.json"
    assert main(["--data_path", str(seqs), "--predict", "--checkpoint_path", str(ck), "--output", str(out)]) == 0
    res = json.loads(out.read_text())
    assert set(res) >= {"independent", "aligned", "aligned+filter"}
    assert res["independent"]["mean"]["flicker_ratio"] == 1.0
    for v in ("independent", "aligned", "aligned+filter"):
        assert len(res[v]["sequences"]) == 2 and all(math.isfinite(x) for x in res[v]["mean"].values())


def test_existing_output_is_refused_before_any_work(seqs, tmp_path, capsys, monkeypatch):
    import pager.evaluation.video_runner as vr

    out = tmp_path / "r.json"
    out.write_text("precious")
    monkeypatch.setattr(vr, "evaluate_sequence", lambda *a, **k: pytest.fail("evaluated before the check"))
    assert main(["--data_path", str(seqs), "--pred_path", str(tmp_path), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "--overwrite" in err and out.read_text() == "precious"
