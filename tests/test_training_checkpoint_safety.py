"""Training checkpoints are safe to resume and never lost.

- resuming refuses every file of a training state that needs unpickling beyond weights-only loading (a crafted
  pickle that would run code), naming the file, before any work; ``--allow_pickle`` is the only way past it;
- publishing ``checkpoint-last`` survives a kill at every file-system step: at every instant the name resolves to a
  complete checkpoint (the old or the new one), and the next save cleans up what the killed one left.
The end-to-end halves (resume after a kill, legacy pickled states with --allow_pickle, bitwise equality with an
uninterrupted run) are in test_training_loop.py.
"""
import json
import pickle

import pytest
import torch

from pager.training import checkpoint as ckpt


class _RunsCode:
    """Unpickling this object opens (creates) the marker file: stands for any code a pickle can run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _training_state(run):
    """A hand-made training state with benign files of every kind train.py writes (no training needed)."""
    from pager.config import load_config, merge_overrides, save_config

    state = run / "checkpoint-last" / "training_checkpoint"
    state.mkdir(parents=True)
    cfg = merge_overrides(load_config(None), {"data.dataset": "Synthetic", "data.data_path": str(run / "nodata"),
                                              "logging.report_to": "none"})
    save_config(cfg, run / "config.yaml")
    save_config(cfg, run / "checkpoint-last" / "config.yaml")
    (state / "progress.json").write_text(json.dumps({"global_step": 1, "epoch": 0, "batches_in_epoch": 1, "best_metric": None}))
    (state / "lr_scheduler.json").write_text(json.dumps({"base_lrs": [1e-4], "last_epoch": 1}))
    torch.save({"state": {0: {"step": torch.tensor(1.0)}}, "param_groups": [{"lr": 1e-4, "params": [0]}]}, state / "optimizer.bin")
    import random

    import numpy as np

    torch.save({"step": 1, "random_state": random.getstate(), "numpy_random_seed": np.random.get_state(),
                "torch_manual_seed": torch.get_rng_state()}, state / "random_states_0.pkl")
    return state


def test_benign_state_passes_the_check(tmp_path):
    state = _training_state(tmp_path)
    assert ckpt.check_training_state(state) is False
    point = ckpt.find_resume_point(tmp_path)
    assert point.state_dir == tmp_path / "checkpoint-last" / "training_checkpoint" and point.run_dir == tmp_path


@pytest.mark.parametrize("fmt", ["torch.save", "plain pickle"])
@pytest.mark.parametrize("name", ["optimizer.bin", "random_states_0.pkl", "scaler.pt", "custom_checkpoint_0.pkl"])
def test_resume_refuses_a_pickle_that_runs_code(tmp_path, capsys, name, fmt):
    from pager.cli.train import main as train_main

    state = _training_state(tmp_path / "run")
    marker = tmp_path / "code_ran"
    payload = {"state": _RunsCode(marker)}
    if fmt == "torch.save":
        torch.save(payload, state / name)
    else:
        (state / name).write_bytes(pickle.dumps(payload))

    assert train_main(["--resume_path", str(state)]) == 2
    err = capsys.readouterr().err
    assert str(state / name) in err and "--allow_pickle" in err and "Traceback" not in err
    assert not marker.exists()
    # the run folder was not touched (the check comes before any work)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint-last", "config.yaml"]
    # the file really runs code when unpickled without the weights-only guard
    if fmt == "torch.save":
        torch.load(state / name, weights_only=False)
    else:
        pickle.loads((state / name).read_bytes())
    assert marker.exists()


def test_allow_pickle_is_the_only_way_past_the_check(tmp_path):
    state = _training_state(tmp_path)
    torch.save({"state": _RunsCode(tmp_path / "marker")}, state / "optimizer.bin")
    with pytest.raises(ckpt.UnsafePickleError, match="optimizer.bin"):
        ckpt.check_training_state(state)
    assert ckpt.check_training_state(state, allow_pickle=True) is False  # warned, not loaded here
    assert not (tmp_path / "marker").exists()


def test_truncated_state_file_is_named(tmp_path):
    state = _training_state(tmp_path)
    data = (state / "optimizer.bin").read_bytes()
    (state / "optimizer.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="optimizer.bin"):
        ckpt.check_training_state(state)


# ------------------------------------------------------------------------------------------------------
# checkpoint-last is switched atomically
# ------------------------------------------------------------------------------------------------------

class _Killed(BaseException):
    pass


def _complete(run, tag):
    import shutil

    tmp = run / ".checkpoint-last.tmp"
    if tmp.exists():  # as the trainer does: a temporary folder left by a killed save is rebuilt
        shutil.rmtree(tmp)
    (tmp / "original").mkdir(parents=True)
    (tmp / "original" / "weights").write_text(tag)
    (tmp / "config.yaml").write_text(tag)
    return tmp


def _content(folder):
    tags = {(folder / "config.yaml").read_text(), (folder / "original" / "weights").read_text()}
    assert len(tags) == 1, f"{folder} mixes two checkpoints"
    return tags.pop()


@pytest.mark.parametrize("symlinks", [True, False], ids=["symlink", "no-symlinks"])
@pytest.mark.parametrize("kill_at", range(6))
def test_checkpoint_last_survives_a_kill_at_every_step(tmp_path, monkeypatch, kill_at, symlinks):
    import os
    import shutil

    if not symlinks:
        def no_symlink(*args, **kwargs):
            raise OSError("symbolic links are not available here")

        monkeypatch.setattr(os, "symlink", no_symlink)
    ckpt.publish_checkpoint(_complete(tmp_path, "step 1"), tmp_path, "checkpoint-last", 1)
    assert _content(ckpt.resolve_checkpoint(tmp_path)) == "step 1"

    # the second save is killed at its kill_at-th file-system operation (rename, symlink, removal)
    count = {"n": 0}

    def killing(fn):
        def wrapper(*args, **kwargs):
            if count["n"] == kill_at:
                count["n"] += 1
                raise _Killed()
            count["n"] += 1
            return fn(*args, **kwargs)

        return wrapper

    with monkeypatch.context() as m:
        m.setattr(os, "replace", killing(os.replace))
        m.setattr(os, "rename", killing(os.rename))
        m.setattr(shutil, "rmtree", killing(shutil.rmtree))
        if symlinks:
            m.setattr(os, "symlink", killing(os.symlink))
        try:
            ckpt.publish_checkpoint(_complete(tmp_path, "step 2"), tmp_path, "checkpoint-last", 2)
            killed = False
        except _Killed:
            killed = True
    # at every instant the name resolves to one complete checkpoint, the old or the new one
    current = ckpt.resolve_checkpoint(tmp_path)
    assert current is not None and _content(current) in ("step 1", "step 2")
    if not killed:
        assert _content(current) == "step 2"

    # the next save works and leaves nothing of the killed one behind
    ckpt.publish_checkpoint(_complete(tmp_path, "step 3"), tmp_path, "checkpoint-last", 3)
    assert _content(tmp_path / "checkpoint-last") == "step 3"
    expected = ["checkpoint-last", "checkpoint-last.step-000003"] if symlinks else ["checkpoint-last"]
    assert sorted(p.name for p in tmp_path.iterdir()) == expected
    assert (tmp_path / "checkpoint-last").is_symlink() == symlinks


def test_same_step_saved_twice_gets_its_own_folder(tmp_path):
    ckpt.publish_checkpoint(_complete(tmp_path, "a"), tmp_path, "checkpoint-last", 5)
    ckpt.publish_checkpoint(_complete(tmp_path, "b"), tmp_path, "checkpoint-last", 5)
    assert _content(tmp_path / "checkpoint-last") == "b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-last", "checkpoint-last.step-000005-1"]


def test_unwritable_run_folder_is_refused_before_any_work(tmp_path, capsys):
    from pager.cli.train import main as train_main

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    # the data path does not exist either: the run folder is checked first, before any data set or model
    assert train_main(["--save_path", str(blocker / "runs"), "--run_name", "r", "--data_path", str(tmp_path / "none"),
                       "--dataset", "Synthetic", "--report_to", "none"]) == 2
    err = capsys.readouterr().err
    assert str(blocker) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
