"""The training loop with a tiny model on tiny procedural panoramas (32 px faces, 64 x 128 ERP).

- resume equivalence: N steps uninterrupted == K steps, stop, resume to N (weights, EMA, LR, position);
- a trained checkpoint loads with ``Pager.from_pretrained`` (released layout, config beside it);
- ``accelerate launch --num_processes 2 --cpu train.py`` trains and writes a checkpoint;
- starting from a base with ``uv`` encoding widens ``conv_in`` with zero weights and trains it.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from pager.data.synthetic.writer import write_dataset
    from pager.model.tiny import build_tiny_base

    root = tmp_path_factory.mktemp("training")
    base = build_tiny_base(root / "base", seed=0, face_size=32)
    data = root / "data"
    write_dataset(data / "Synthetic", num=8, height=64, seed=3, progress=False)
    return {"root": root, "base": base, "data": data}


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    from accelerate.state import AcceleratorState, GradientState, PartialState

    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


def _cfg(assets, run_name, **over):
    from pager.config import load_config, merge_overrides

    values = {
        "model.pretrained_path": str(assets["base"]),
        "model.face_size": 32,
        "model.unet_positional_encoding": "RoPE",
        "data.data_path": str(assets["data"]),
        "data.dataset": "Synthetic",
        "data.batch_size": 1,
        "data.use_data_augmentation": True,
        "training.num_workers": 0,
        "training.max_train_steps": 4,
        "training.gradient_accumulation_steps": 2,
        "training.gradient_checkpointing": True,
        "training.ema_decay": 0.9,
        "optimization.lr_exp_warmup_steps": 0.4,
        "optimization.learning_rate": 1e-3,
        "optimization.max_grad_norm": 0.5,
        "loss.grad_loss_weight": 0.5,
        "loss.normals_consistency_loss_weight": 0.1,
        "loss.invalid_mask_weight": 0.1,
        "loss.invalid_saturation_weight": 0.5,
        "validation.run_validation": False,
        "validation.run_tiny_validation": False,
        "logging.report_to": "none",
        "logging.img_report_frequency": 1000,
        "logging.save_path": str(assets["root"] / "runs"),
        "logging.run_name": run_name,
    }
    values.update(over)
    return merge_overrides(load_config(None), values)


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "diffusion_pytorch_model.safetensors"))


def _reset_accelerate():
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


@pytest.fixture(scope="module")
def runs(assets):
    """4 steps uninterrupted ("full"), and 2 steps then interrupted ("part"; its folder is copied, never resumed)."""
    from pager.training.trainer import train

    full = train(_cfg(assets, "full"))
    _reset_accelerate()
    part = train(_cfg(assets, "part"), stop_after_steps=2)
    _reset_accelerate()
    return {"full": full, "part": part}


def _resume(run_dir, allow_pickle=False, **kwargs):
    """Resume ``run_dir`` the way train.py does: the stored config plus the resume path."""
    from pager.training.trainer import load_training_config, train

    _reset_accelerate()
    cfg = load_training_config(None, {}, resume_path=str(run_dir))
    return train(cfg, allow_pickle=allow_pickle, **kwargs)


def _assert_same_weights(a_dir, b_dir):
    for variant in ("original", "EMA"):
        a = _weights(a_dir / variant)
        b = _weights(b_dir / variant)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(b[k], a[k]), f"{variant}/{k} differs"


def _copy_run(src, dst):
    import shutil

    shutil.copytree(src, dst, symlinks=True)
    return dst


def test_resume_reaches_the_same_weights(assets, runs):
    full, part = runs["full"], runs["part"]
    assert full.global_step == 4 and not full.stopped_early
    assert set(full.last_losses) == {"total_loss", "l1_loss", "grad_loss", "normals_consistency_loss", "saturation_loss"}
    assert part.stopped_early and part.global_step == 2
    run = _copy_run(part.run_dir, assets["root"] / "runs" / "part_resumed")
    state = run / "checkpoint-last" / "training_checkpoint"
    progress = json.loads((state / "progress.json").read_text())
    # 6 training panoramas, batch 1, accumulation 2: 3 steps per epoch; 2 steps = 4 batches into epoch 0
    assert progress == {"global_step": 2, "epoch": 0, "batches_in_epoch": 4, "best_metric": None}
    # no pickle but Accelerate's optimizer and RNG files (loaded weights-only): EMA, schedule, progress are safetensors/JSON
    assert sorted(p.name for p in state.iterdir()) == [
        "ema.safetensors", "lr_scheduler.json", "model.safetensors", "optimizer.bin", "progress.json", "random_states_0.pkl"]

    cfg_resumed = _resume(state)
    assert cfg_resumed.global_step == 4 and cfg_resumed.run_dir == run.resolve()
    # bitwise equal to the uninterrupted run: same data order, RNG, optimiser state, schedule and EMA
    _assert_same_weights(full.checkpoint_dir, cfg_resumed.checkpoint_dir)
    # training did change the trained (attention) weights, and only those
    base = _weights(Path(assets["base"]) / "unet")
    trained = _weights(full.checkpoint_dir / "original")
    changed = {k for k in base if not torch.equal(base[k], trained[k])}
    assert changed and all("transformer_blocks" in k for k in changed)
    assert any(not torch.equal(a, b) for a, b in zip(_weights(full.checkpoint_dir / "EMA").values(), trained.values()))


def test_resume_of_a_legacy_pickled_state_needs_allow_pickle(assets, runs, capsys):
    """States written before the safetensors/JSON format (Accelerate's custom_checkpoint_*.pkl) load only with
    --allow_pickle, and then continue exactly."""
    from safetensors.torch import load_file

    from pager.cli.train import main as train_main

    run = _copy_run(runs["part"].run_dir, assets["root"] / "runs" / "part_legacy")
    state = run / "checkpoint-last" / "training_checkpoint"
    ema = load_file(str(state / "ema.safetensors"))
    from safetensors import safe_open

    with safe_open(str(state / "ema.safetensors"), framework="pt") as handle:
        meta = handle.metadata()
    # the order the older trainer registered them: EMA, LR schedule, progress
    torch.save({"decay": float(meta["decay"]), "num_updates": int(meta["num_updates"]), "shadow": ema},
               state / "custom_checkpoint_0.pkl")
    torch.save(json.loads((state / "lr_scheduler.json").read_text()), state / "custom_checkpoint_1.pkl")
    torch.save(json.loads((state / "progress.json").read_text()), state / "custom_checkpoint_2.pkl")
    for name in ("ema.safetensors", "lr_scheduler.json"):
        (state / name).unlink()

    assert train_main(["--resume_path", str(state), "--report_to", "none"]) == 2
    err = capsys.readouterr().err
    assert "custom_checkpoint_0.pkl" in err and "--allow_pickle" in err and "Traceback" not in err
    resumed = _resume(state, allow_pickle=True)
    assert resumed.global_step == 4
    _assert_same_weights(runs["full"].checkpoint_dir, resumed.checkpoint_dir)
    # the new checkpoint is written in the safe format
    assert not list((resumed.checkpoint_dir / "training_checkpoint").glob("custom_checkpoint_*"))


def test_run_killed_during_its_first_save_restarts(assets, runs, monkeypatch, caplog):
    """A kill while the first checkpoint is published leaves no checkpoint-last; --resume_path <run> then
    starts the run again (no folder to delete by hand) and reaches the uninterrupted run's weights."""
    import pager.training.checkpoint as ckpt
    from pager.training.trainer import train

    class Killed(BaseException):
        pass

    def killed_symlink(*args, **kwargs):  # the process dies after the versioned folder is complete, before the switch
        raise Killed()

    monkeypatch.setattr(ckpt.os, "symlink", killed_symlink)
    _reset_accelerate()
    with pytest.raises(Killed):
        train(_cfg(assets, "killed"), stop_after_steps=2)
    monkeypatch.undo()
    run = assets["root"] / "runs" / "killed"
    assert not (run / "checkpoint-last").exists() and (run / "checkpoint-last.step-000002").is_dir()
    # a new run of the same name is refused with the way out in the message
    _reset_accelerate()
    with pytest.raises(FileExistsError, match="--resume_path"):
        train(_cfg(assets, "killed"))
    # the versioned folder is complete: resuming the run folder continues from it (step 2)
    with caplog.at_level("INFO", logger="pager.training.trainer"):
        resumed = _resume(run)
    assert any("resumed from" in r.getMessage() and "step=2" in r.getMessage() for r in caplog.records)
    assert resumed.global_step == 4
    _assert_same_weights(runs["full"].checkpoint_dir, resumed.checkpoint_dir)
    assert sorted(p.name for p in run.iterdir() if "checkpoint" in p.name) == ["checkpoint-last", "checkpoint-last.step-000004"]
    assert (run / "checkpoint-last").is_symlink()

    # killed before anything of the checkpoint was complete: the run starts again from step 0
    def killed_save_state(*args, **kwargs):
        raise Killed()

    monkeypatch.setattr("pager.training.trainer.save_training_state", killed_save_state)
    _reset_accelerate()
    with pytest.raises(Killed):
        train(_cfg(assets, "killed_early"), stop_after_steps=2)
    monkeypatch.undo()
    run = assets["root"] / "runs" / "killed_early"
    assert (run / ".checkpoint-last.tmp").is_dir() and not (run / "checkpoint-last").exists()
    restarted = _resume(run)
    assert restarted.global_step == 4
    _assert_same_weights(runs["full"].checkpoint_dir, restarted.checkpoint_dir)
    assert not (run / ".checkpoint-last.tmp").exists()


def test_checkpoint_loads_with_from_pretrained_and_trains_uv(assets):
    from pager.model import Pager
    from pager.training.trainer import train

    cfg = _cfg(
        assets, "normals_uv",
        **{"model.modality": "normals", "model.unet_positional_encoding": "uv", "training.max_train_steps": 2,
           "training.gradient_accumulation_steps": 1, "training.gradient_checkpointing": False,
           "validation.run_tiny_validation": True,
           "validation.tiny_val_frequency": 2, "logging.img_report_frequency": 2, "logging.report_to": "tensorboard"},
    )
    result = train(cfg)
    ckpt = result.checkpoint_dir
    assert (ckpt / "EMA" / "config.json").is_file() and (ckpt / "original" / "config.json").is_file()
    saved = OmegaConf.load(ckpt / "config.yaml")
    assert saved.model.modality == "normals" and saved.model.normals_frame == "pager"
    assert saved.model.unet_positional_encoding == "uv" and saved.model.face_size == 32
    assert set(result.tiny_val_metrics) >= {"tiny_val/mean", "tiny_val/median"}
    assert list((result.run_dir / "images").glob("train_rgb_pred_gt_error_*.jpg"))
    assert list((result.run_dir / "images").glob("tiny_val_rgb_pred_gt_error_*.jpg"))
    assert list((result.run_dir / "logs").rglob("events.out.tfevents.*"))

    model = Pager.from_pretrained(ckpt, device="cpu")
    assert model.modalities == ("normals",) and model.configs["normals"].normals_frame == "pager"
    assert model.unets["normals"].config.in_channels == 10
    out = model.predict(torch.zeros(1, 3, 64, 128), face_size=32)
    assert out["normals"].shape == (1, 3, 64, 128) and torch.isfinite(out["normals"]).all()
    # conv_in was widened with zero weights for the 2 uv channels and is trained with the attention layers
    start = _weights(Path(assets["base"]) / "unet")["conv_in.weight"]
    original = _weights(ckpt / "original")["conv_in.weight"]
    assert start.shape[1] == 8 and original.shape[1] == 10
    assert not torch.equal(original[:, 8:], torch.zeros_like(original[:, 8:]))
    assert model.unets["normals"].conv_in.weight.shape[1] == 10

    # the published layout: unet/ (here the EMA weights) + config.yaml
    from pager.training.checkpoint import export_release

    import shutil

    shutil.copytree(assets["base"], assets["root"] / "release_normals_base")
    release = export_release(ckpt, assets["root"] / "release_normals", pretrained_path="../release_normals_base")
    assert sorted(p.name for p in release.iterdir()) == ["config.yaml", "unet"]
    assert OmegaConf.load(release / "config.yaml").model.pretrained_path == "../release_normals_base"
    ema = _weights(ckpt / "EMA")
    released = Pager.from_pretrained(release, device="cpu").unets["normals"].state_dict()
    assert all(torch.equal(released[k], ema[k]) for k in ema)


def test_start_from_checkpoint_path_keeps_its_model_config(assets, caplog):
    from pager.model.tiny import build_tiny_checkpoint
    from pager.training.trainer import train

    start = build_tiny_checkpoint(assets["root"] / "start_ckpt", modality="depth", positional_encoding="uv",
                                  base_dir=assets["base"], seed=5, max_depth=20.0, face_size=32)
    cfg = _cfg(assets, "from_ckpt", **{"model.checkpoint_path": str(start), "training.max_train_steps": 1,
                                       "training.gradient_accumulation_steps": 1, "training.gradient_checkpointing": False})
    with caplog.at_level("WARNING"):
        result = train(cfg, overrides={"model.unet_positional_encoding": "RoPE"})
    assert any("unet_positional_encoding" in r.getMessage() and "ignored" in r.getMessage() for r in caplog.records)
    saved = OmegaConf.load(result.checkpoint_dir / "config.yaml")
    # the checkpoint decides: uv encoding and its 20 m range (not the data set's 75 m)
    assert saved.model.unet_positional_encoding == "uv" and saved.model.max_depth == 20.0
    assert saved.model.checkpoint_path == str(start)
    before, after = _weights(start / "unet"), _weights(result.checkpoint_dir / "original")
    assert torch.equal(before["conv_out.weight"], after["conv_out.weight"])  # frozen, from the checkpoint
    assert not torch.equal(before["conv_in.weight"], after["conv_in.weight"])  # uv input weights are trained


def test_cli_help_and_errors(capsys):
    from pager.cli.main import main as pager_main
    from pager.cli.train import main as train_main

    with pytest.raises(SystemExit) as exit_info:
        pager_main(["train", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--max_train_steps", "--resume_path", "--only_train_attention_layers", "--face_size", "--pretrained_path"):
        assert option in text
    assert train_main(["--resume_path", "/nonexistent/run"]) == 2
    assert "resume_path" in capsys.readouterr().err


def test_select_trainable_parameters():
    from diffusers import UNet2DConditionModel

    from pager.model.tiny import tiny_unet_config
    from pager.training.trainer import select_trainable_parameters

    unet = UNet2DConditionModel(**tiny_unet_config(10, 16))
    params = select_trainable_parameters(unet, True, "uv")
    names = {n for n, p in unet.named_parameters() if p.requires_grad}
    assert len(params) == len(names)
    assert {"conv_in.weight", "conv_in.bias"} <= names
    assert all("transformer_blocks" in n or n.startswith("conv_in.") for n in names)
    assert not any("resnets" in n for n in names)
    select_trainable_parameters(unet, True, "RoPE")
    assert not unet.conv_in.weight.requires_grad
    assert len(select_trainable_parameters(unet, False, "RoPE")) == len(list(unet.parameters()))


def test_new_run_refuses_an_existing_run_folder(assets):
    from pager.training.trainer import train

    run = assets["root"] / "runs" / "taken"
    run.mkdir(parents=True)
    (run / "something").write_text("x")
    with pytest.raises(FileExistsError, match="already exists"):
        train(_cfg(assets, "taken"))


@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes(assets, tmp_path):
    runs = tmp_path / "runs"
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--cpu", str(REPO / "train.py"),
        "--pretrained_path", str(assets["base"]), "--data_path", str(assets["data"]), "--dataset", "Synthetic",
        "--face_size", "32", "--batch_size", "1", "--max_train_steps", "2", "--num_workers", "0",
        "--run_validation", "true", "--run_tiny_validation", "false", "--report_to", "none",
        "--save_path", str(runs), "--run_name", "ddp", "--gradient_checkpointing", "false",
    ]
    # The documented command: accelerate's --cpu launcher starts one process, train.py re-launches itself as
    # two CPU processes (gloo) -- see pager.cli.launch; the two RNG states below prove both ran.
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="")
    env.pop("PAGER_NO_RELAUNCH", None)
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    ckpt = runs / "ddp" / "checkpoint-last"
    assert (ckpt / "EMA" / "diffusion_pytorch_model.safetensors").is_file()
    state = ckpt / "training_checkpoint"
    # one RNG state per process, and the step counter of the whole run
    assert {p.name for p in state.glob("random_states_*.pkl")} == {"random_states_0.pkl", "random_states_1.pkl"}
    assert json.loads((state / "progress.json").read_text())["global_step"] == 2
    assert "val/abs_rel" in proc.stdout
