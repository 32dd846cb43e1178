"""Configuration: OmegaConf YAML files with argparse overrides.

Precedence, from weakest to strongest: the YAML template (``configs/base.yaml`` or the file given with
``--config``), then command-line arguments. The one exception is the set of model-loading parameters
(:data:`MODEL_LOADING_KEYS`): when a checkpoint is loaded, its own stored YAML decides them, and a
command-line attempt to change them is reported with a warning and ignored.

Every leaf of the template becomes a command-line option named after the leaf (``training.max_train_steps``
-> ``--max_train_steps``); leaf names are unique across sections. Boolean options accept a bare flag
(``--log_scale``) or an explicit value (``--log_scale false``).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from omegaconf import DictConfig, OmegaConf

logger = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

#: Parameters that define how a checkpoint's networks are built and decoded; always taken from the checkpoint.
MODEL_LOADING_KEYS = (
    "modality",
    "pretrained_path",
    "unet_positional_encoding",
    "vae_use_RoPE",
    "metric_depth",
    "log_scale",
    "min_depth",
    "max_depth",
    "normals_frame",
    "cube_padding",
)

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}


def str_to_bool(value: str) -> bool:
    """Parse a command-line boolean (true/false/yes/no/1/0/on/off)."""
    lowered = str(value).strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {value!r}")


def _none_or(kind):
    def parse(value: str):
        if str(value).strip().lower() in ("null", "none", "~"):
            return None
        return kind(value)

    parse.__name__ = kind.__name__
    return parse


def _auto_value(value: str):
    """Parse a value for a leaf whose template value is null: YAML scalar rules (int, float, bool, null, str)."""
    import yaml

    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return value
    return parsed if isinstance(parsed, (int, float, bool, str)) or parsed is None else value


def _bool_or_string(value: str):
    """Boolean, or the string itself when it is not one (``vae_use_RoPE`` also takes the string "RoPE")."""
    try:
        return str_to_bool(value)
    except argparse.ArgumentTypeError:
        return value


#: Boolean leaves that also accept a string value.
BOOL_OR_STRING_KEYS = ("vae_use_RoPE",)


def load_config(path: Optional[str | Path] = None, default_name: str = "base.yaml", kind: Optional[str] = None) -> DictConfig:
    """Load a YAML config (with no path, the packaged template ``pager/configs/<default_name>``) and check it
    against the schema (:mod:`pager.config_schema`; ``kind`` = ``training``, ``inference`` or ``checkpoint``,
    by default ``inference`` for ``inference.yaml`` and ``training`` otherwise). Unknown keys, wrong types and
    out-of-range values raise :class:`~pager.config_schema.ConfigError` naming the key and the file."""
    from pager.config_schema import validate_config

    if path is None:
        path = CONFIG_DIR / default_name
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        cfg = OmegaConf.load(path)
    except Exception as exc:  # omegaconf / yaml errors
        raise ValueError(f"cannot parse config file {path}: {exc}") from exc
    if cfg is None or (not isinstance(cfg, DictConfig) and not cfg):
        cfg = OmegaConf.create({})
    if not isinstance(cfg, DictConfig):
        raise ValueError(f"config file {path} must hold a mapping at the top level")
    if kind is None:
        kind = "inference" if default_name == "inference.yaml" else "training"
    return validate_config(cfg, kind, source=str(path))


def iter_leaves(cfg: DictConfig, prefix: Tuple[str, ...] = ()) -> Iterable[Tuple[Tuple[str, ...], Any]]:
    """Yield ``(path, value)`` for every leaf of a config (nested mappings are walked)."""
    for key in cfg.keys():
        value = cfg.get(key)
        if isinstance(value, DictConfig):
            yield from iter_leaves(value, prefix + (str(key),))
        else:
            yield prefix + (str(key),), value


def leaf_paths(cfg: DictConfig, skip_sections: Sequence[str] = ()) -> Dict[str, Tuple[str, ...]]:
    """Map every leaf name to its path; raises if a leaf name occurs twice (ambiguous CLI option)."""
    paths: Dict[str, Tuple[str, ...]] = {}
    for path, _ in iter_leaves(cfg):
        if path[0] in skip_sections:
            continue
        name = path[-1]
        if name in paths:
            raise ValueError(f"config leaf name {name!r} is ambiguous: {'.'.join(paths[name])} and {'.'.join(path)}")
        paths[name] = path
    return paths


def add_config_arguments(parser: argparse.ArgumentParser, template: DictConfig, skip_sections: Sequence[str] = (),
                         kind: str = "training") -> None:
    """Add one ``--<leaf>`` option per config leaf, typed by the schema (:mod:`pager.config_schema`).

    The default is ``argparse.SUPPRESS`` (an option not given leaves no attribute), so an explicit
    ``--checkpoint_path none`` (null) is told apart from "not given". ``none``/``null`` mean null for optional
    leaves, except where ``none`` is a documented value (``--unet_positional_encoding none``, ``--report_to none``).
    """
    from pager.config_schema import leaf_choices, option_type, schema_fields

    existing = {a.dest for a in parser._actions}
    known = schema_fields(kind)
    for name, path in leaf_paths(template, skip_sections).items():
        if name in existing:
            continue
        value = OmegaConf.select(template, ".".join(path))
        choices = leaf_choices(name, kind) if name in known else None
        help_text = f"overrides {'.'.join(path)} (config: {value!r}"
        help_text += f"; one of {', '.join(map(str, choices))})" if choices else ")"
        if name not in known:
            raise ValueError(f"config leaf {'.'.join(path)} is not in the schema (pager/config_schema.py)")
        kind_of = option_type(name, kind)
        if isinstance(value, bool) or known[name] is bool:
            parser.add_argument(f"--{name}", type=kind_of, nargs="?", const=True, default=argparse.SUPPRESS,
                                metavar="BOOL", help=help_text)
        else:
            parser.add_argument(f"--{name}", type=kind_of, default=argparse.SUPPRESS, help=help_text)


def cli_overrides(args: argparse.Namespace, template: DictConfig, skip_sections: Sequence[str] = ()) -> Dict[str, Any]:
    """The config leaves given on the command line, as ``{"section.key": value}``."""
    out: Dict[str, Any] = {}
    for name, path in leaf_paths(template, skip_sections).items():
        if hasattr(args, name):  # given on the command line (possibly as null)
            out[".".join(path)] = getattr(args, name)
    return out


def merge_overrides(cfg: DictConfig, overrides: Dict[str, Any]) -> DictConfig:
    """Return a copy of ``cfg`` with dotted-key overrides applied (CLI wins over the YAML)."""
    merged = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    for dotted, value in overrides.items():
        OmegaConf.update(merged, dotted, value, merge=False)
    return merged


def apply_checkpoint_model_config(
    cfg: DictConfig, checkpoint_model_cfg: DictConfig | Dict[str, Any], overrides: Optional[Dict[str, Any]] = None
) -> DictConfig:
    """Replace ``cfg.model``'s loading parameters by the checkpoint's; warn about CLI attempts to change them."""
    ckpt = OmegaConf.create(checkpoint_model_cfg) if not isinstance(checkpoint_model_cfg, DictConfig) else checkpoint_model_cfg
    merged = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    if "model" not in merged:
        merged.model = {}
    for key in MODEL_LOADING_KEYS:
        if key not in ckpt:
            continue
        wanted = (overrides or {}).get(f"model.{key}")
        if wanted is not None and wanted != ckpt[key]:
            logger.warning(
                "--%s=%r ignored: model-loading parameters come from the checkpoint's own config (%s=%r)",
                key, wanted, key, ckpt[key],
            )
        merged.model[key] = ckpt[key]
    return merged


def build_parser_with_config(
    description: str, default_config: str = "base.yaml", skip_sections: Sequence[str] = ()
) -> Tuple[argparse.ArgumentParser, DictConfig]:
    """A parser with ``--config``/``--configs`` plus one option per leaf of the default template."""
    template = load_config(None, default_config)
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", "--configs", dest="config", default=None, help="YAML config file (default: packaged template)")
    add_config_arguments(parser, template, skip_sections)
    return parser, template


def resolve_config(
    args: argparse.Namespace, template: DictConfig, default_config: str = "base.yaml", skip_sections: Sequence[str] = ()
) -> Tuple[DictConfig, Dict[str, Any]]:
    """Load ``args.config`` (or the packaged default) and apply the CLI overrides; returns (config, overrides)."""
    base = load_config(getattr(args, "config", None), default_config)
    overrides = cli_overrides(args, template, skip_sections)
    unknown = [k for k in overrides if OmegaConf.select(base, k, default="__missing__") == "__missing__"]
    for key in unknown:
        logger.debug("option %s is not in %s; added from the command line", key, getattr(args, "config", None))
    return merge_overrides(base, overrides), overrides


def to_yaml(cfg: DictConfig) -> str:
    """Serialise a config to YAML text."""
    return OmegaConf.to_yaml(cfg)


def save_config(cfg: DictConfig, path: str | Path) -> Path:
    """Write ``cfg`` as YAML atomically."""
    from pager.io_utils import atomic_save

    return atomic_save(path, to_yaml(cfg).encode("utf-8"))


__all__: List[str] = [
    "MODEL_LOADING_KEYS",
    "add_config_arguments",
    "apply_checkpoint_model_config",
    "build_parser_with_config",
    "cli_overrides",
    "load_config",
    "merge_overrides",
    "resolve_config",
    "save_config",
    "str_to_bool",
]
