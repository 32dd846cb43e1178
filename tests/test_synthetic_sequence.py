"""Procedural sequences (pager synth --sequence): layout, readers, and poses that agree with the rendered depth."""
import json

import numpy as np
import pytest
import torch

from pager.cli.main import main
from pager.data.synthetic.sequence import camera_path, list_sequences, read_sequence, render_sequence
from pager.data.synthetic.scene import make_scene
from pager.evaluation.temporal import sequence_flicker


@pytest.mark.parametrize("kind", ["indoor", "outdoor"])
@pytest.mark.parametrize("motion", ["yaw", "translate", "both"])
def test_true_depth_is_consistent_under_the_recorded_poses(kind, motion):
    """Warping each true frame into the previous one with the recorded poses reproduces its true depth."""
    panos, poses = render_sequence(3, kind, motion, frames=3, height=32)
    gt = torch.from_numpy(np.stack([p.depth for p in panos])).double()
    mask = torch.from_numpy(np.stack([p.mask for p in panos]))
    out = sequence_flicker(gt, gt, torch.from_numpy(poses), mask=mask)
    assert float(out["flicker"].max()) < 0.01  # bilinear interpolation of a 64 x 32 panorama only
    assert float(out["covisible"].min()) > 0.6
    if motion == "yaw":
        assert np.allclose(poses[:, :3, 3], poses[0, :3, 3])
    else:
        step = np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1)
        assert np.all(step > 0) and np.allclose(step, step[0])


def test_translation_keeps_clear_of_objects():
    from pager.data.synthetic.scene import _clearance

    for seed in range(4):
        scene = make_scene(seed, "indoor")
        path = camera_path(scene, "translate", 24)
        assert min(_clearance(np.asarray(s.camera), list(scene.objects[1:])) for s in path) >= 0.3


def test_synth_sequence_cli_layout_and_readers(tmp_path):
    out = tmp_path / "Synthetic"  # <data_path>/Synthetic, where the dataset reader looks
    assert main(["synth", "--sequence", "--out", str(out), "--num", "2", "--frames", "3", "--height", "16", "--no-progress"]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["sequence"]["frames"] == 3 and meta["sequence"]["motion"] == "both"
    seqs = list_sequences(out)
    assert [s.kind for s in seqs] == ["indoor", "outdoor"] and all(len(s) == 3 for s in seqs)
    frame = seqs[0].load(1)
    assert frame["depth"].shape == (16, 32) and frame["mask"].dtype == bool and frame["normals"].shape == (16, 32, 3)
    # the depth PNG quantises to 2 mm: the reader gives the rendered depth back
    panos, poses = render_sequence(int(json.loads((seqs[0].folder / "poses.json").read_text())["seed"]), "indoor", "both", 3, 16)
    assert np.abs(frame["depth"] - panos[1].depth).max() <= 0.001 + 1e-6
    assert np.allclose(seqs[0].poses, poses)
    # every frame is also a sample of the Synthetic dataset
    from pager.data.readers.synthetic import Synthetic

    assert len(Synthetic(tmp_path, split="test", scenes="both")) == 6
    # a second run refuses to overwrite, naming the folder
    with pytest.raises(FileExistsError, match=str(out)):
        from pager.data.synthetic.sequence import write_sequences

        write_sequences(out, num=1, frames=2, height=16, progress=False)
    with pytest.raises(FileNotFoundError, match="poses.json"):
        read_sequence(tmp_path)
