"""Every YAML config is checked against the schema (pager/config_schema.py), wherever it enters:
packaged templates, a user's ``--config`` (training and inference) and a checkpoint's ``config.yaml``."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from pager.config import load_config
from pager.config_schema import ConfigError, validate_mapping

ROOT = Path(__file__).resolve().parents[1]

# The original project's training config layout (keys as released; values are ours): nested logging sections,
# a top-level enable_xformers in one version, and 'modality: normal' in its normals checkpoints.
ORIGINAL_LAYOUT = """
debug: false
seed: 42
enable_xformers: False
training: {num_train_epochs: 10, max_train_steps: null, gradient_accumulation_steps: 1,
           only_train_attention_layers: true, gradient_checkpointing: true, resume_path: null, use_EMA: true}
model: {modality: normal, pretrained_path: some/base, checkpoint_path: null, enable_xformers: true,
        unet_positional_encoding: RoPE, vae_use_RoPE: true, metric_depth: false, log_scale: true}
data: {data_path: /data, dataset: PanoInfinigen, scenes: both, batch_size: 1, use_data_augmentation: true}
optimization: {learning_rate: 3e-4, lr_exp_warmup_steps: 0.03, adam_beta1: 0.9, adam_beta2: 0.999,
               adam_weight_decay: 1e-2, adam_epsilon: 1e-8, clip_grad_norm: true, max_grad_norm: 1.0}
loss: {l1_loss_weight: 1.0, grad_loss_weight: 0.0, normals_consistency_loss_weight: 0.0, invalid_mask_weight: 0.0}
validation: {run_validation: true, run_tiny_validation: true, tiny_val_frequency: 200}
logging: {tracker_project_name: Pager, save_path: checkpoints/, save_frequency: 1, loss_report_frequency: 1,
          img_report_frequency: 200, report_to: wandb, tensorboard: {log_path: tb_logs}, wandb: {run_name: null}}
"""
ORIGINAL_INFERENCE_LAYOUT = "data: {data_path: /data, dataset: Matterport3D360}\nlogging: {img_report_frequency: 1}\n"


@pytest.mark.parametrize("path", sorted((ROOT / "pager" / "configs").glob("*.yaml"))
                         + sorted((ROOT / "pager" / "weights").rglob("config.yaml")), ids=lambda p: p.name)
def test_packaged_configs_validate(path):
    cfg = load_config(path, default_name=path.name)
    assert len(cfg) > 0


def test_original_layouts_are_accepted(tmp_path):
    out = validate_mapping(OmegaConf.to_container(OmegaConf.create(ORIGINAL_LAYOUT)), "checkpoint", "x")
    assert out["model"]["modality"] == "normal" and out["model"]["enable_xformers"] is True
    assert out["logging"]["log_path"] == "tb_logs" and "tensorboard" not in out["logging"]
    assert out["optimization"]["learning_rate"] == pytest.approx(3e-4)
    assert out["optimization"]["adam_epsilon"] == pytest.approx(1e-8)
    inf = validate_mapping(OmegaConf.to_container(OmegaConf.create(ORIGINAL_INFERENCE_LAYOUT)), "inference", "y")
    assert inf["data"]["dataset"] == "Matterport3D360"


def _write(tmp_path, text, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


BAD = [  # (yaml, words the message must contain)
    ("training:\n  max_train_step: 5\n", ["training.max_train_step", "did you mean 'max_train_steps'"]),
    ("max_train_steps: 5\n", ["max_train_steps", "training"]),
    ("model:\n  face_size: abc\n", ["model.face_size", "integer"]),
    ("training:\n  use_EMA: 'maybe'\n", ["training.use_EMA", "boolean"]),
    ("model:\n  unet_positional_encoding: rope2\n", ["model.unet_positional_encoding", "'uv'"]),
    ("training:\n  ema_decay: 1.5\n", ["training.ema_decay", "< 1"]),
    ("data: 3\n", ["'data'", "section"]),
]


@pytest.mark.parametrize("text,words", BAD, ids=[b[1][0] for b in BAD])
def test_bad_config_names_key_and_file(tmp_path, text, words):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    for word in [str(path)] + words:
        assert word in str(exc.value)


def test_quoted_booleans_are_parsed_not_truthy(tmp_path):
    path = _write(tmp_path, "training:\n  use_EMA: 'false'\n  gradient_checkpointing: 'no'\nmodel:\n  log_scale: 'true'\n")
    cfg = load_config(path)
    assert cfg.training.use_EMA is False and cfg.training.gradient_checkpointing is False
    assert cfg.model.log_scale is True


def test_none_strings_mean_what_the_docs_say(tmp_path):
    """``none`` is a value for the positional encoding and report_to, null for optional paths."""
    from pager.cli.train import add_arguments
    from pager.config import cli_overrides
    import argparse

    parser = add_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--unet_positional_encoding", "none", "--report_to", "none", "--checkpoint_path", "none",
                              "--run_name", "null", "--use_EMA", "false"])
    over = cli_overrides(args, load_config())
    assert over["model.unet_positional_encoding"] == "none"
    assert over["logging.report_to"] == "none"
    assert over["model.checkpoint_path"] is None  # given as null: overrides a YAML value
    assert over["logging.run_name"] is None and over["training.use_EMA"] is False
    assert "training.max_train_steps" not in over  # not given: not an override
    cfg = load_config(_write(tmp_path, "logging:\n  report_to: null\nmodel:\n  unet_positional_encoding: none\n"))
    assert cfg.logging.report_to == "none" and cfg.model.unet_positional_encoding == "none"


@pytest.mark.parametrize("entry", ["train.py", "inference.py", "checkpoint"])
def test_unknown_key_refused_at_every_entry(tmp_path, entry):
    """One bad key (``max_train_step``/``img_report_frequncy``) is refused with the file named, before any work."""
    if entry == "checkpoint":
        import shutil

        from pager.model.loading import load_checkpoint_config_only

        ck = tmp_path / "ck"
        shutil.copytree(ROOT / "pager" / "weights" / "default" / "depth", ck, ignore=shutil.ignore_patterns("unet*", "EMA*"))
        text = (ck / "config.yaml").read_text().replace("  log_scale: true", "  log_scael: true")
        (ck / "config.yaml").write_text(text)
        with pytest.raises(ConfigError, match="log_scael.*did you mean 'log_scale'"):
            load_checkpoint_config_only(str(ck))
        return
    bad = "training:\n  max_train_step: 5\n" if entry == "train.py" else "img_report_frequncy: 3\n"
    path = _write(tmp_path, bad)
    out = subprocess.run([sys.executable, "-X", "importtime", str(ROOT / entry), "--config", str(path), "--data_path",
                          str(tmp_path)], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 2, out.stderr[-3000:]
    imported = {m.group(1).split(".")[0] for m in re.finditer(r"^import time:.*\|\s*([\w.]+)\s*$", out.stderr, re.M)}
    errors = "\n".join(line for line in out.stderr.splitlines() if not line.startswith("import time:"))
    assert str(path) in errors and "did you mean" in errors and "Traceback" not in errors
    assert not {"torch", "diffusers", "accelerate"} & imported, "reported only after the heavy imports"
    assert not any(p.name != path.name for p in tmp_path.iterdir())  # nothing written


def _literal_values(cls, name):
    """The string values a schema field's Literal (possibly inside Optional / Union) allows."""
    from typing import Literal, get_args, get_origin, get_type_hints

    def walk(tp):
        if get_origin(tp) is Literal:
            return {a for a in get_args(tp) if isinstance(a, str)}
        return set().union(*(walk(a) for a in get_args(tp))) if get_args(tp) else set()

    return walk(get_type_hints(cls)[name])


def _runtime_choices():
    """(schema class, field, the values the code that consumes the field accepts). Scenes, modality names and
    dtype spellings of the command lines are taken from the schema itself (``pager.config_schema.SCENES`` ...);
    here the schema is held against the code that acts on the value."""
    from pager.config_schema import InferenceConfig, ModelSection, ValidationSection
    from pager.evaluation.metrics import ALIGNMENT_TYPES
    from pager.geometry import STITCHING_MODES
    from pager.geometry.cube_padding import CUBE_PADDING_MODES
    from pager.model import loading
    from pager.model.panorama_layers import ATTENTION_BACKENDS, ROPE_TOKEN_ORDERS
    from pager.model.pager_model import DTYPES

    return [
        (InferenceConfig, "dtype", None, set(DTYPES)),
        (InferenceConfig, "stitching", set(STITCHING_MODES), None),
        (ModelSection, "cube_padding", set(CUBE_PADDING_MODES), set(loading.CUBE_PADDING_MODES)),
        (ModelSection, "normals_frame", set(loading.NORMALS_FRAMES), None),
        (ModelSection, "unet_positional_encoding", set(loading.POSITIONAL_ENCODINGS), None),
        (ModelSection, "attention_backend", set(ATTENTION_BACKENDS), None),
        (ModelSection, "vae_rope_token_order", set(ROPE_TOKEN_ORDERS), None),
        (ValidationSection, "val_alignment", (set(ALIGNMENT_TYPES) - {"none"}) | {"auto"}, None),
    ]


def test_schema_choices_are_the_codes_choices():
    """Every enumerated config value the schema accepts is one the code accepts, and vice versa: the schema's
    Literals are a second spelling of the runtime tuples (CLI choices, loader checks), so they must not drift."""
    for cls, name, runtime, accepts in _runtime_choices():
        schema = _literal_values(cls, name)
        if runtime is not None:
            assert schema == runtime, (cls.__name__, name, schema ^ runtime)
        if accepts is not None:
            assert schema <= accepts, (cls.__name__, name, schema - accepts)


def test_command_line_choices_come_from_the_schema():
    """Every --scenes / --dtype / --modalities option of every command offers exactly the schema's values (the
    YAML-backed train / infer commands validate theirs with the schema)."""
    from pager.cli.main import build_parser
    from pager.config_schema import DTYPE_NAMES, MODALITY_NAMES, SCENES

    want = {"--scenes": set(SCENES), "--dtype": set(DTYPE_NAMES), "--modalities": set(MODALITY_NAMES)}
    seen = set()

    def walk(parser, path):
        for action in parser._actions:
            if getattr(action, "choices", None) and isinstance(action.choices, dict):  # sub-commands
                for name, sub in action.choices.items():
                    walk(sub, path + (name,))
            for flag in action.option_strings:
                if flag in want:
                    seen.add((path, flag))
                    if action.choices is None:  # YAML-backed commands: the value is checked by the schema itself
                        assert path in (("pager", "infer"), ("pager", "train")), (path, flag)
                    else:
                        assert set(action.choices) == want[flag], (path, flag, action.choices)

    walk(build_parser(all_commands=True), ("pager",))
    assert {f for _, f in seen} == set(want), seen
