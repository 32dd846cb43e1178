"""Config merging: YAML template < CLI, except model-loading keys, which the checkpoint decides."""
import logging

import pytest
from omegaconf import OmegaConf

from pager.config import (
    apply_checkpoint_model_config,
    build_parser_with_config,
    load_config,
    resolve_config,
)


def test_every_original_training_argument_is_an_option():
    parser, _ = build_parser_with_config("test")
    options = {a.dest for a in parser._actions}
    original = (
        "debug seed enable_xformers num_train_epochs max_train_steps gradient_accumulation_steps "
        "only_train_attention_layers gradient_checkpointing resume_path use_EMA modality pretrained_path "
        "checkpoint_path unet_positional_encoding vae_use_RoPE metric_depth log_scale data_path dataset scenes "
        "batch_size use_data_augmentation learning_rate lr_exp_warmup_steps adam_beta1 adam_beta2 "
        "adam_weight_decay adam_epsilon clip_grad_norm max_grad_norm l1_loss_weight grad_loss_weight "
        "normals_consistency_loss_weight invalid_mask_weight run_validation run_tiny_validation "
        "tiny_val_frequency tracker_project_name save_path save_frequency loss_report_frequency "
        "img_report_frequency report_to run_name config"
    ).split()
    assert [name for name in original if name not in options] == []


def test_cli_wins_over_yaml(tmp_path):
    cfg_file = tmp_path / "exp.yaml"
    cfg = load_config()
    cfg.training.max_train_steps = 7
    cfg.optimization.learning_rate = 0.5
    OmegaConf.save(cfg, cfg_file)
    parser, template = build_parser_with_config("test")
    args = parser.parse_args(["--configs", str(cfg_file), "--learning_rate", "1e-3", "--log_scale", "false", "--metric_depth"])
    merged, overrides = resolve_config(args, template)
    assert merged.training.max_train_steps == 7  # from the YAML
    assert merged.optimization.learning_rate == pytest.approx(1e-3)  # CLI wins
    assert merged.model.log_scale is False and merged.model.metric_depth is True
    assert set(overrides) == {"optimization.learning_rate", "model.log_scale", "model.metric_depth"}


def test_null_leaves_parse_as_yaml_scalars_and_vae_rope_keeps_strings():
    parser, template = build_parser_with_config("test")
    args = parser.parse_args(["--max_train_steps", "12", "--vae_use_RoPE", "RoPE", "--resume_path", "runs/a"])
    merged, _ = resolve_config(args, template)
    assert merged.training.max_train_steps == 12
    assert merged.model.vae_use_RoPE == "RoPE"
    assert merged.training.resume_path == "runs/a"
    with pytest.raises(SystemExit):
        parser.parse_args(["--log_scale", "maybe"])


def test_checkpoint_model_keys_win_and_warn(caplog):
    parser, template = build_parser_with_config("test")
    args = parser.parse_args(["--unet_positional_encoding", "uv", "--learning_rate", "0.1"])
    merged, overrides = resolve_config(args, template)
    ckpt = {"unet_positional_encoding": "RoPE", "log_scale": True, "metric_depth": True}
    with caplog.at_level(logging.WARNING):
        final = apply_checkpoint_model_config(merged, ckpt, overrides)
    assert final.model.unet_positional_encoding == "RoPE"
    assert final.model.metric_depth is True
    assert final.optimization.learning_rate == pytest.approx(0.1)
    assert "unet_positional_encoding" in caplog.text


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")
