"""The schema of PaGeR's YAML configs, and the value rules shared by configs and command-line options.

Every YAML config is checked against these dataclasses when it is loaded: the packaged templates
(``configs/*.yaml``), a user's ``--config`` file and a checkpoint's stored ``config.yaml``. A config is a
mapping of sections (``training``, ``model``, ``data``, ...) to leaves; the inference template is flat. Checks:

* unknown keys are an error naming the key and the file, with the closest known key (``difflib``) as a hint;
* every leaf must have the declared type; quoted scalars are converted by the same rules as the command line
  (``'false'`` is ``False``, ``'10'`` is ``10``, ``'3e-4'`` is ``0.0003``), anything else is an error naming the
  key and the file -- a quoted boolean is never "truthy";
* numeric leaves obey :data:`VALUE_RULES` (``face_size`` > 0, ``ema_decay`` in [0, 1), ...);
* the string ``none`` is a value where the documentation lists it (``unet_positional_encoding: none`` is the
  "no positional encoding" variant, ``report_to: none`` disables logging); for optional paths and names
  (``checkpoint_path``, ``run_name``, ...) ``none``/``null`` mean "not set".

Keys of the original project's configs stay valid: ``logging.tensorboard.log_path`` and
``logging.wandb.run_name`` (moved to ``logging.log_path`` / ``logging.run_name``), a top-level
``enable_xformers`` (moved to ``model.enable_xformers``) and ``modality: normal``.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Literal, Mapping, Optional, Tuple, Union, get_args, get_origin

# ----------------------------------------------------------------------------------------------- value rules


@dataclass(frozen=True)
class Rule:
    """A numeric range: ``low``/``high`` bounds (``None``: unbounded), inclusive or not."""

    low: Optional[float] = None
    high: Optional[float] = None
    low_inclusive: bool = True
    high_inclusive: bool = True

    def describe(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'>=' if self.low_inclusive else '>'} {_fmt(self.low)}")
        if self.high is not None:
            parts.append(f"{'<=' if self.high_inclusive else '<'} {_fmt(self.high)}")
        return " and ".join(parts) or "a number"

    def check(self, value: Any) -> Optional[str]:
        """``None`` when ``value`` obeys the rule, else what was expected."""
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if isinstance(value, float) and not math.isfinite(value):
            return f"a finite number {self.describe()}"
        if self.low is not None and (value < self.low or (value == self.low and not self.low_inclusive)):
            return self.describe()
        if self.high is not None and (value > self.high or (value == self.high and not self.high_inclusive)):
            return self.describe()
        return None

    def bad_example(self) -> Any:
        """A value that breaks the rule (used by the tests)."""
        if self.low is not None:
            return self.low if not self.low_inclusive else self.low - 1
        return self.high + 1 if self.high is not None else None


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


POSITIVE = Rule(low=0, low_inclusive=False)
AT_LEAST_1 = Rule(low=1)
NON_NEGATIVE = Rule(low=0)
FRACTION_OPEN_TOP = Rule(low=0, high=1, high_inclusive=False)
FRACTION = Rule(low=0, high=1)
UNBOUNDED = Rule()

#: Numeric options and config leaves by name, one rule each (names are shared between the configs and the
#: command lines of every command; a name means the same quantity everywhere).
VALUE_RULES: Dict[str, Rule] = {
    # sizes and counts
    "face_size": AT_LEAST_1, "output_height": AT_LEAST_1, "height": AT_LEAST_1, "max_height": AT_LEAST_1,
    "batch_size": AT_LEAST_1, "num": AT_LEAST_1, "views": AT_LEAST_1, "supersample": AT_LEAST_1,
    "scenes_per_shard": AT_LEAST_1, "max_points": AT_LEAST_1, "max_samples": AT_LEAST_1, "threads": AT_LEAST_1,
    "num_workers": NON_NEGATIVE, "seed": NON_NEGATIVE, "port": Rule(low=1, high=65535),
    "num_train_epochs": AT_LEAST_1, "max_train_steps": AT_LEAST_1, "gradient_accumulation_steps": AT_LEAST_1,
    "checkpointing_steps": AT_LEAST_1, "save_frequency": AT_LEAST_1, "loss_report_frequency": AT_LEAST_1,
    "img_report_frequency": NON_NEGATIVE, "tiny_val_frequency": AT_LEAST_1, "error_maps_saving_frequency": AT_LEAST_1,
    "seam_tolerance": NON_NEGATIVE, "splits": FRACTION,
    # physical quantities
    "depth_scale": POSITIVE, "min_depth": POSITIVE, "max_depth": POSITIVE, "max_file_mb": POSITIVE,
    "edge_threshold": POSITIVE, "edge_tolerance": POSITIVE, "edge_window": POSITIVE, "dbe_max_distance": POSITIVE,
    "pixel_jump_thresh": NON_NEGATIVE, "edge_mean_jump_thresh": NON_NEGATIVE, "min_broken_pixel_frac": FRACTION,
    # optimisation
    "learning_rate": POSITIVE, "lr_exp_warmup_steps": FRACTION_OPEN_TOP, "lr_final_ratio": Rule(low=0, high=1, low_inclusive=False),
    "adam_beta1": FRACTION_OPEN_TOP, "adam_beta2": FRACTION_OPEN_TOP, "adam_weight_decay": NON_NEGATIVE,
    "adam_epsilon": POSITIVE, "max_grad_norm": POSITIVE, "ema_decay": FRACTION_OPEN_TOP,
    "l1_loss_weight": NON_NEGATIVE, "grad_loss_weight": NON_NEGATIVE, "normals_consistency_loss_weight": NON_NEGATIVE,
    "invalid_mask_weight": NON_NEGATIVE, "invalid_saturation_weight": NON_NEGATIVE,
    "invalid_saturation_margin": NON_NEGATIVE,
    # sequences (pager video, pager synth --sequence)
    "start": NON_NEGATIVE, "end": AT_LEAST_1, "stride": AT_LEAST_1, "fps": POSITIVE, "frames": AT_LEAST_1,
    "temporal_filter": FRACTION_OPEN_TOP, "tau": POSITIVE, "pointcloud_every": NON_NEGATIVE,
    "yaw_step": UNBOUNDED, "speed": NON_NEGATIVE,
}

# ----------------------------------------------------------------------------------------------- the schema

Modality = Literal["depth", "normals", "normal"]
Scenes = Literal["indoor", "outdoor", "both"]
DtypeName = Literal["float32", "fp32", "float16", "fp16", "bfloat16", "bf16"]
#: The same values as tuples, for argparse ``choices`` (this module imports no torch, so parsers stay fast).
MODALITY_NAMES: Tuple[str, ...] = get_args(Modality)
SCENES: Tuple[str, ...] = get_args(Scenes)
DTYPE_NAMES: Tuple[str, ...] = get_args(DtypeName)


@dataclass
class TrainingSection:
    num_train_epochs: int
    max_train_steps: Optional[int]
    gradient_accumulation_steps: int
    only_train_attention_layers: bool
    gradient_checkpointing: bool
    resume_path: Optional[str]
    use_EMA: bool
    ema_decay: float
    mixed_precision: Literal["no", "fp16", "bf16"]
    num_workers: int
    checkpointing_steps: Optional[int]


@dataclass
class ModelSection:
    modality: Modality
    pretrained_path: Optional[str]
    checkpoint_path: Optional[str]
    enable_xformers: bool
    attention_backend: Optional[Literal["sdpa", "xformers", "math"]]  # written by training: what was used
    unet_positional_encoding: Optional[Literal["uv", "RoPE", "none"]]
    vae_use_RoPE: Union[bool, Literal["RoPE"]]
    metric_depth: bool
    log_scale: bool
    min_depth: Optional[float]
    max_depth: Optional[float]
    face_size: Optional[int]
    cube_padding: Optional[Literal["reference", "geometric"]]
    normals_frame: Optional[Literal["reference", "pager"]]
    vae_rope_token_order: Optional[Literal["reference_vae", "face_row_col"]]
    trained_from: Optional[str]  # free text (the embedded default model)


@dataclass
class DataSection:
    data_path: Optional[str]
    dataset: str
    scenes: Scenes
    batch_size: int
    use_data_augmentation: bool
    height: Optional[int]
    skip_bad_samples: bool


@dataclass
class OptimizationSection:
    learning_rate: float
    lr_exp_warmup_steps: float
    adam_beta1: float
    adam_beta2: float
    adam_weight_decay: float
    adam_epsilon: float
    clip_grad_norm: bool
    max_grad_norm: float
    lr_final_ratio: float


@dataclass
class LossSection:
    l1_loss_weight: float
    grad_loss_weight: float
    normals_consistency_loss_weight: float
    invalid_mask_weight: float
    invalid_saturation_weight: float = 0.0
    invalid_saturation_margin: float = 0.02


@dataclass
class ValidationSection:
    run_validation: bool
    run_tiny_validation: bool
    tiny_val_frequency: int
    val_alignment: Literal["auto", "metric", "scale", "scale_and_shift", "median", "log_shift"]


@dataclass
class TensorboardSection:  # original layout: logging.tensorboard.log_path
    log_path: Optional[str]


@dataclass
class WandbSection:  # original layout: logging.wandb.run_name
    run_name: Optional[str]


@dataclass
class LoggingSection:
    tracker_project_name: str
    save_path: str
    save_frequency: int
    loss_report_frequency: int
    img_report_frequency: int
    report_to: Optional[Literal["tensorboard", "wandb", "none"]]
    log_path: Optional[str]
    run_name: Optional[str]
    tensorboard: TensorboardSection
    wandb: WandbSection


@dataclass
class TrainingConfig:
    """``configs/base.yaml`` and every checkpoint's ``config.yaml`` (all keys optional)."""

    debug: bool
    seed: int
    enable_xformers: bool  # original layout: top level
    training: TrainingSection
    model: ModelSection
    data: DataSection
    optimization: OptimizationSection
    loss: LossSection
    validation: ValidationSection
    logging: LoggingSection


@dataclass
class InferenceConfig:
    """``configs/inference.yaml`` (flat); the sections of :class:`TrainingConfig` are accepted too (the
    original project's inference YAML is sectioned: ``data.dataset``, ``logging.img_report_frequency``)."""

    checkpoint_path: Optional[str]
    results_path: str
    dataset: str
    data_path: Optional[str]
    scenes: Scenes
    split: str
    img_report_frequency: int
    pred_only: bool
    generate_eval: bool
    enable_xformers: bool
    face_size: Optional[int]
    batch_size: int
    dtype: DtypeName
    device: Optional[str]
    skip_bad_samples: bool
    stitching: Literal["exact", "reference"]
    seam_blend: bool
    channels_last: bool
    compile: bool
    tiled_vae: bool
    tiled_decoding: bool  # the earlier name of tiled_vae
    training: TrainingSection
    model: ModelSection
    data: DataSection
    optimization: OptimizationSection
    loss: LossSection
    validation: ValidationSection
    logging: LoggingSection


SCHEMAS = {"training": TrainingConfig, "checkpoint": TrainingConfig, "inference": InferenceConfig}

#: Fields whose value ``none`` (any case) is the documented value "none" rather than null.
NONE_IS_A_VALUE = ("unet_positional_encoding", "report_to")

# ----------------------------------------------------------------------------------------------- checking

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}
_NULL = {"null", "none", "~", ""}


class ConfigError(ValueError):
    """A config file (or option) that does not match the schema; the message names the key and the source."""


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Union:
        args = [a for a in get_args(tp) if a is not type(None)]
        inner = " or ".join(_type_name(a) for a in args)
        return inner + (" or null" if len(args) < len(get_args(tp)) else "")
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    return {bool: "a boolean (true/false)", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def convert_value(value: Any, tp: Any, name: str = "") -> Any:
    """``value`` converted to the annotated type ``tp``; raises ``TypeError`` with what was expected.

    Strings are parsed as on the command line: booleans (true/false/yes/no/1/0/on/off), integers, floats;
    ``none``/``null`` give ``None`` for optional fields, except in :data:`NONE_IS_A_VALUE` fields where
    ``none`` is the documented value (a YAML/CLI null there also means ``"none"``).
    """
    origin = get_origin(tp)
    if name in NONE_IS_A_VALUE and (value is None or (isinstance(value, str) and value.strip().lower() == "none")):
        return "none"
    if origin is Union:
        args = get_args(tp)
        if type(None) in args and (value is None or (isinstance(value, str) and value.strip().lower() in _NULL)):
            return None
        for arg in args:  # exact matches first, then conversions
            if arg is not type(None) and _matches(value, arg):
                return value
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert_value(value, arg, name)
            except TypeError:
                continue
        raise TypeError(f"expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        choices = get_args(tp)
        if value in choices:
            return value
        if isinstance(value, str):
            folded = {str(c).lower(): c for c in choices}
            if value.strip().lower() in folded:
                return folded[value.strip().lower()]
        raise TypeError(f"expected {_type_name(tp)}, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise TypeError(f"expected a boolean (true/false), got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise TypeError(f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise TypeError(f"expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise TypeError(f"expected a string, got {value!r}")
    raise TypeError(f"unsupported schema type {tp!r}")  # pragma: no cover


def _matches(value: Any, tp: Any) -> bool:
    if get_origin(tp) is Literal:
        return value in get_args(tp)
    if tp is bool:
        return isinstance(value, bool)
    if tp in (int, float):
        return isinstance(value, tp) and not isinstance(value, bool)
    return isinstance(value, tp)


def _fields(cls: Any) -> Dict[str, Any]:
    import typing

    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def schema_fields(kind: str = "training") -> Dict[str, Any]:
    """``{leaf name: annotated type}`` over every section of a schema (leaf names are unique per section set)."""
    out: Dict[str, Any] = {}

    def walk(cls: Any) -> None:
        for name, tp in _fields(cls).items():
            if dataclasses.is_dataclass(tp):
                walk(tp)
            else:
                out.setdefault(name, tp)

    walk(SCHEMAS[kind])
    return out


def _suggest(key: str, known: List[str], elsewhere: Mapping[str, str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    if key in elsewhere:
        return f"; it belongs in section {elsewhere[key]!r}"
    close = difflib.get_close_matches(key, list(elsewhere), n=1, cutoff=0.75)
    if close:
        return f"; did you mean {elsewhere[close[0]]}.{close[0]}?"
    return ""


def _leaf_sections(cls: Any, prefix: str = "") -> Dict[str, str]:
    out: Dict[str, str] = {}
    for name, tp in _fields(cls).items():
        if dataclasses.is_dataclass(tp):
            for leaf, where in _leaf_sections(tp, f"{prefix}{name}.").items():
                out.setdefault(leaf, where)
        elif prefix:
            out.setdefault(name, prefix.rstrip("."))
    return out


def validate_mapping(data: Mapping[str, Any], kind: str = "training", source: str = "config") -> Dict[str, Any]:
    """Check a config mapping against the schema ``kind`` (``training``, ``checkpoint``, ``inference``).

    Returns a converted copy (quoted scalars parsed, legacy keys moved; see the module docstring).
    Raises :class:`ConfigError` naming ``source`` and the dotted key.
    """
    cls = SCHEMAS[kind]
    everywhere = _leaf_sections(cls)
    out = _validate_section(dict(data), cls, source, "", everywhere)
    return _move_legacy_keys(out)


def _validate_section(data: Dict[str, Any], cls: Any, source: str, prefix: str, everywhere: Mapping[str, str]) -> Dict[str, Any]:
    fields = _fields(cls)
    out: Dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if not isinstance(key, str) or key not in fields:
            hint = _suggest(str(key), list(fields), everywhere)
            raise ConfigError(f"{source}: unknown key {dotted!r}{hint}")
        tp = fields[key]
        if dataclasses.is_dataclass(tp):
            if value is None:
                out[key] = {}
                continue
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: {dotted!r} must be a section (a mapping of keys), got {value!r}")
            out[key] = _validate_section(dict(value), tp, source, dotted + ".", everywhere)
            continue
        try:
            converted = convert_value(value, tp, key)
        except TypeError as exc:
            raise ConfigError(f"{source}: {dotted}: {exc}") from None
        rule = VALUE_RULES.get(key)
        problem = rule.check(converted) if rule is not None else None
        if problem:
            raise ConfigError(f"{source}: {dotted} must be {problem}, got {converted!r}")
        out[key] = converted
    return out


def _move_legacy_keys(cfg: Dict[str, Any]) -> Dict[str, Any]:
    logging_section = cfg.get("logging")
    if isinstance(logging_section, dict):
        for sub, leaf in (("tensorboard", "log_path"), ("wandb", "run_name")):
            nested = logging_section.pop(sub, None)
            if isinstance(nested, dict) and leaf in nested and logging_section.get(leaf) is None:
                logging_section[leaf] = nested[leaf]
    if "enable_xformers" in cfg and isinstance(cfg.get("model"), dict):
        cfg["model"].setdefault("enable_xformers", cfg.pop("enable_xformers"))
    elif "enable_xformers" in cfg and "model" in cfg:
        cfg.pop("enable_xformers")
    return cfg


def validate_config(cfg: Any, kind: str = "training", source: str = "config") -> Any:
    """:func:`validate_mapping` for an OmegaConf ``DictConfig``; returns a new ``DictConfig``."""
    from omegaconf import DictConfig, OmegaConf

    data = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else dict(cfg)
    return OmegaConf.create(validate_mapping(data, kind, source))


def option_type(name: str, kind: str = "training") -> Callable[[str], Any]:
    """An argparse ``type=`` for the config leaf ``name``: schema conversion + :data:`VALUE_RULES`."""
    import argparse

    tp = schema_fields(kind)[name]

    def parse(text: str) -> Any:
        try:
            value = convert_value(text, tp, name)
        except TypeError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        rule = VALUE_RULES.get(name)
        problem = rule.check(value) if rule is not None else None
        if problem:
            raise argparse.ArgumentTypeError(f"must be {problem}, got {text}")
        return value

    parse.__name__ = _type_name(tp)
    return parse


def leaf_choices(name: str, kind: str = "training") -> Optional[Tuple[Any, ...]]:
    """The allowed values of a Literal leaf (``None`` for other types)."""
    tp = schema_fields(kind)[name]
    for t in (tp, *get_args(tp)):
        if get_origin(t) is Literal:
            return get_args(t)
    return None


__all__ = [
    "ConfigError", "DTYPE_NAMES", "InferenceConfig", "MODALITY_NAMES", "Rule", "SCENES", "TrainingConfig", "VALUE_RULES",
    "convert_value", "leaf_choices",
    "option_type", "schema_fields", "validate_config", "validate_mapping",
]
