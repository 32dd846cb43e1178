"""``model.cube_padding`` (reference | geometric): read from a checkpoint's YAML (missing: reference, the
released checkpoints), applied to the VAE and every UNet, written back by save_checkpoint and training."""
import pytest
import torch
from omegaconf import OmegaConf

from pager.geometry import CubePadConv2d, cube_padding_mode
from pager.model import Pager, build_tiny_checkpoint
from pager.model.loading import ModalityConfig



@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cube_padding_modes")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PAGER_CACHE_DIR", str(root / "cache"))
        yield root


def test_modality_config_key():
    assert ModalityConfig.from_yaml_config({"model": {"modality": "depth"}}).cube_padding == "reference"
    assert ModalityConfig.from_yaml_config({"model": {"cube_padding": "geometric"}}).cube_padding == "geometric"
    assert ModalityConfig.from_yaml_config({"model": {"cube_padding": None}}).cube_padding == "reference"
    with pytest.raises(ValueError, match="cube_padding"):
        ModalityConfig.from_yaml_config({"model": {"cube_padding": "zeros"}})
    from pager.config import MODEL_LOADING_KEYS, load_config

    assert "cube_padding" in MODEL_LOADING_KEYS
    assert load_config(None).model.cube_padding == "geometric"


def _modes(model):
    return {type(m).__name__: m.cube_padding_mode for m in model.modules() if isinstance(m, CubePadConv2d)}


def test_checkpoint_mode_applied_saved_and_reloaded(root):
    geo = build_tiny_checkpoint(root / "geo", seed=0)
    assert OmegaConf.load(geo / "config.yaml").model.cube_padding == "geometric"
    ref = build_tiny_checkpoint(root / "ref", seed=0, base_dir=root / "geo_base", cube_padding=None)
    assert "cube_padding" not in OmegaConf.load(ref / "config.yaml").model
    for path, mode in ((geo, "geometric"), (ref, "reference")):
        m = Pager.from_pretrained(str(path), device="cpu")
        assert m.cube_padding_mode == mode
        assert cube_padding_mode(m.vae) == mode and cube_padding_mode(m.unets["depth"]) == mode
        assert _modes(m) and set(_modes(m).values()) == {mode}
        out = m.save_checkpoint(root / f"saved_{mode}", "depth")
        assert OmegaConf.load(out / "config.yaml").model.cube_padding == mode
        assert Pager.from_pretrained(str(out), device="cpu").cube_padding_mode == mode
    # from_base keeps the released behaviour unless asked (the trainer passes model.cube_padding)
    assert Pager.from_base(str(root / "geo_base"), face_size=32).cube_padding_mode == "reference"
    fb = Pager.from_base(str(root / "geo_base"), face_size=32, cube_padding_mode="geometric")
    assert fb.cube_padding_mode == "geometric" and fb.checkpoint_config("depth")["model"]["cube_padding"] == "geometric"
    # same weights, different padding: different predictions
    x = torch.rand(1, 3, 64, 128) * 2 - 1
    a = Pager.from_pretrained(str(geo), device="cpu").predict(x)["depth_values"]
    b = Pager.from_pretrained(str(ref), device="cpu").predict(x)["depth_values"]
    assert not torch.allclose(a, b)


def test_modalities_must_agree(root):
    depth = build_tiny_checkpoint(root / "d_geo", seed=1, cube_padding="geometric")
    normals = build_tiny_checkpoint(root / "n_ref", modality="normals", seed=1, base_dir=root / "d_geo_base",
                                    cube_padding="reference")
    with pytest.raises(ValueError, match=r"depth: cube_padding='geometric', normals: cube_padding='reference'"):
        Pager.from_pretrained({"depth": str(depth), "normals": str(normals)}, device="cpu")
    normals_geo = build_tiny_checkpoint(root / "n_geo", modality="normals", seed=1, base_dir=root / "d_geo_base")
    both = Pager.from_pretrained({"depth": str(depth), "normals": str(normals_geo)}, device="cpu")
    assert both.cube_padding_mode == "geometric" and set(_modes(both).values()) == {"geometric"}


def test_training_writes_the_mode(root):
    """New models train geometric (base.yaml); a checkpoint_path's own mode (reference when absent) wins."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    from pager.config import load_config, merge_overrides
    from pager.data.synthetic.writer import write_dataset
    from pager.training.trainer import train

    base = root / "geo_base"
    data = root / "data"
    write_dataset(data / "Synthetic", num=4, height=64, seed=3, progress=False)
    ref = build_tiny_checkpoint(root / "ref_start", seed=0, base_dir=base, cube_padding=None)

    def run(name, **over):
        values = {
            "model.pretrained_path": str(base), "model.face_size": 32, "data.data_path": str(data),
            "data.dataset": "Synthetic", "data.batch_size": 1, "training.num_workers": 0,
            "training.max_train_steps": 1, "training.gradient_accumulation_steps": 1,
            "validation.run_validation": False, "validation.run_tiny_validation": False,
            "logging.report_to": "none", "logging.save_path": str(root / "runs"), "logging.run_name": name,
        }
        values.update(over)
        try:
            return train(merge_overrides(load_config(None), values))
        finally:
            AcceleratorState._reset_state(True)
            GradientState._reset_state()
            PartialState._reset_state()

    for name, over, mode in (("new", {}, "geometric"), ("from_ref", {"model.checkpoint_path": str(ref)}, "reference")):
        result = run(name, **over)
        assert OmegaConf.load(result.checkpoint_dir / "config.yaml").model.cube_padding == mode
        assert Pager.from_pretrained(str(result.checkpoint_dir), device="cpu").cube_padding_mode == mode
