"""Checkpoint loading: local folders, a hub cache offline, variants, config precedence, pickle refusal."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch

from pager.model import Pager, build_tiny_checkpoint
from pager.model.loading import ModalityConfig, load_empty_prompt_embedding, widen_conv_in
from pager.model.tiny import tiny_text_encoder, tiny_unet, tiny_vae


REV = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PAGER_CACHE_DIR", str(root / "pager_cache"))
        ck = build_tiny_checkpoint(root / "ck", seed=3, variants=("unet", "EMA", "original"))
        yield {"root": root, "ck": ck, "base": root / "ck_base"}


@pytest.fixture(scope="module")
def erp():
    g = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, 32, 64, generator=g) * 2 - 1


def _in_memory_model(base: Path, seed: int) -> Pager:
    """The same networks built in memory (not read from disk) + an independently computed embedding."""
    from diffusers import DDPMScheduler
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(base / "tokenizer"))
    te = tiny_text_encoder(len(tok.get_vocab()), seed).eval()
    ids = tok([""], padding="max_length", truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        emb = te(ids)[0]
    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          prediction_type="v_prediction", rescale_betas_zero_snr=True)
    cfg = ModalityConfig(modality="depth", positional_encoding="RoPE", face_size=32, cube_padding="geometric")
    return Pager(tiny_vae(seed, 32), {"depth": tiny_unet("RoPE", seed, 32)}, {"depth": cfg}, emb,
                 alpha_prod=float(sched.alphas_cumprod[-1]), num_train_timesteps=1000).eval()


def test_local_folder_equals_in_memory_model(env, erp):
    loaded = Pager.from_pretrained(str(env["ck"]), device="cpu")
    ref = _in_memory_model(env["base"], seed=3)
    a = loaded.predict(erp, face_size=32)
    b = ref.predict(erp, face_size=32)
    assert torch.equal(a["depth"], b["depth"])
    assert torch.equal(loaded.empty_prompt_embedding, ref.empty_prompt_embedding)
    # the released schedule's alpha_cumprod[T-1] is ~0: z = -v
    assert loaded.alpha_prod == pytest.approx(0.0, abs=1e-6)
    assert loaded.configs["depth"].positional_encoding == "RoPE"


def _fake_hub_cache(cache: Path, src: Path, repo_id: str) -> None:
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(src, repo / "snapshots" / REV)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REV)


def test_hub_repo_id_offline_from_cache(env, erp, tmp_path, monkeypatch):
    src = tmp_path / "src"
    ck = build_tiny_checkpoint(src / "ck", seed=3, base_dir=env["base"], pretrained_path="tiny-org/tiny-base")
    cache = tmp_path / "hub"
    _fake_hub_cache(cache, ck, "tiny-org/PaGeR-tiny-depth")
    _fake_hub_cache(cache, env["base"], "tiny-org/tiny-base")
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    hub = Pager.from_pretrained("tiny-org/PaGeR-tiny-depth", device="cpu")
    local = Pager.from_pretrained(str(env["ck"]), device="cpu")
    assert torch.equal(hub.predict(erp, face_size=32)["depth"], local.predict(erp, face_size=32)["depth"])
    assert hub.configs["depth"].name == "PaGeR-tiny-depth"
    with pytest.raises(FileNotFoundError, match="not-cached/repo"):
        Pager.from_pretrained("not-cached/repo")


def test_variants_select_different_weights(env, erp):
    out = {v: Pager.from_pretrained(str(env["ck"]), variant=v, device="cpu").predict(erp, face_size=32)["depth"]
           for v in (None, "EMA", "original")}
    assert torch.equal(out[None], out["EMA"])  # same weights written to unet/ and EMA/
    assert not torch.allclose(out["EMA"], out["original"])  # original/ was perturbed
    with pytest.raises(ValueError, match="variant"):
        Pager.from_pretrained(str(env["ck"]), variant="last")


def test_checkpoint_yaml_wins_over_overrides(env, caplog):
    with caplog.at_level(logging.WARNING, logger="pager.model.loading"):
        m = Pager.from_pretrained(str(env["ck"]), device="cpu",
                                  overrides={"model.unet_positional_encoding": "uv", "max_depth": 10.0, "seed": 1})
    assert m.configs["depth"].positional_encoding == "RoPE"
    assert m.configs["depth"].max_depth == 75.0
    text = caplog.text
    assert "unet_positional_encoding='uv' ignored" in text and "max_depth=10.0 ignored" in text
    assert "seed" not in text  # not a model-loading key: nothing to warn about


def test_depth_range_comes_from_checkpoint(env, erp, tmp_path):
    indoor = build_tiny_checkpoint(tmp_path / "indoor", seed=3, base_dir=env["base"], scenes="indoor")
    explicit = build_tiny_checkpoint(tmp_path / "explicit", seed=3, base_dir=env["base"], min_depth=0.5, max_depth=20.0, log_scale=False)
    assert Pager.from_pretrained(str(indoor)).configs["depth"].max_depth == 15.0
    m = Pager.from_pretrained(str(explicit), device="cpu")
    out = m.predict(erp, face_size=32)
    v = out["depth_values"]
    # linear model: d = min + (v + 1) / 2 * (max - min), computed by hand
    assert torch.allclose(out["depth"], 0.5 + (v + 1) / 2 * 19.5, atol=1e-5)
    assert torch.equal(out["depth_mask"], (out["depth"] > 1.01 * 0.5) & (out["depth"] < 0.99 * 20.0))


def test_pickle_weights_refused_unless_allowed(env, erp, tmp_path):
    from safetensors.torch import load_file

    ck = tmp_path / "pickled"
    shutil.copytree(env["ck"], ck)
    weights = ck / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(str(weights)), ck / "unet" / "diffusion_pytorch_model.bin")
    weights.unlink()
    with pytest.raises(ValueError, match="allow_pickle"):
        Pager.from_pretrained(str(ck), variant="unet")
    m = Pager.from_pretrained(str(ck), variant="unet", allow_pickle=True, device="cpu")
    ref = Pager.from_pretrained(str(env["ck"]), device="cpu")
    assert torch.equal(m.predict(erp, face_size=32)["depth"], ref.predict(erp, face_size=32)["depth"])


def test_missing_pieces_give_clear_errors(env, tmp_path):
    with pytest.raises(FileNotFoundError, match="neither an existing folder"):
        Pager.from_pretrained(str(tmp_path / "nope" / "deeper" / "x"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        Pager.from_pretrained(str(empty))
    with pytest.raises(ValueError, match="'normals' was requested"):
        Pager.from_pretrained(str(env["ck"]), modality="normals")


def test_default_model_absent_says_checkpoint_required(tmp_path, monkeypatch):
    import pager.model.loading as loading

    # An installation without the embedded weights (e.g. a slim wheel): a clear message, not a traceback.
    monkeypatch.setattr(loading, "DEFAULT_WEIGHTS_DIR", tmp_path / "weights" / "default")
    with pytest.raises(FileNotFoundError, match="checkpoint is required"):
        Pager.from_pretrained("default")


def test_uv_checkpoint_channels_checked(env, tmp_path):
    ck = build_tiny_checkpoint(tmp_path / "uv", positional_encoding="uv", base_dir=env["base"])
    m = Pager.from_pretrained(str(ck), device="cpu")
    assert m.unets["depth"].config.in_channels == 10
    yaml = (ck / "config.yaml").read_text().replace("unet_positional_encoding: uv", "unet_positional_encoding: none")
    (ck / "config.yaml").write_text(yaml)
    with pytest.raises(ValueError, match="10 input channels"):
        Pager.from_pretrained(str(ck))


def test_widen_conv_in_keeps_outputs():
    unet = tiny_unet("RoPE", seed=5)
    x = torch.randn(2, 8, 8, 8)
    t = torch.full((2,), 999)
    cond = torch.randn(2, 3, 16)
    with torch.no_grad():
        before = unet(x, t, cond).sample
        widen_conv_in(unet, 10)
        after = unet(torch.cat([x, torch.randn(2, 2, 8, 8)], 1), t, cond).sample
    assert unet.config.in_channels == 10 and unet.conv_in.weight.shape[1] == 10
    assert torch.allclose(before, after, atol=1e-6)


def test_empty_prompt_embedding_cached(env, tmp_path, monkeypatch):
    from safetensors.torch import save_file

    monkeypatch.setenv("PAGER_CACHE_DIR", str(tmp_path / "cache"))
    first = load_empty_prompt_embedding(str(env["base"]))
    files = list((tmp_path / "cache").rglob("*.safetensors"))
    assert len(files) == 1 and first.shape == (1, 77, 16)
    marker = torch.full_like(first, 7.0)
    save_file({"embedding": marker}, str(files[0]))
    assert torch.equal(load_empty_prompt_embedding(str(env["base"])), marker)  # read from the cache
    # a base that ships the embedding file needs no text encoder at all
    shipped = tmp_path / "base_shipped"
    shutil.copytree(env["base"], shipped)
    shutil.rmtree(shipped / "text_encoder")
    save_file({"embedding": first}, str(shipped / "empty_prompt_embedding.safetensors"))
    assert torch.equal(load_empty_prompt_embedding(str(shipped)), first)


def test_from_base_widens_uv_and_round_trips(env, erp, tmp_path):
    plain = Pager.from_base(str(env["base"]), positional_encoding="none", face_size=32).eval()
    uv = Pager.from_base(str(env["base"]), positional_encoding="uv", face_size=32, max_depth=20.0).eval()
    assert uv.unets["depth"].config.in_channels == 10
    # new conv_in inputs are zero: the uv model starts out predicting exactly like the base UNet
    assert torch.allclose(uv.predict(erp, face_size=32)["depth_values"], plain.predict(erp, face_size=32)["depth_values"], atol=1e-6)
    with torch.no_grad():
        for p in uv.unets["depth"].parameters():
            p.add_(0.01 * torch.randn_like(p))  # "training"
    out = uv.save_checkpoint(tmp_path / "trained", "depth", variant="EMA", extra_config={"seed": 7})
    with pytest.raises(FileExistsError):
        uv.save_checkpoint(out, "depth", variant="EMA")
    loaded = Pager.from_pretrained(str(out), device="cpu")
    cfg = loaded.configs["depth"]
    assert (cfg.positional_encoding, cfg.max_depth, cfg.normals_frame, cfg.face_size) == ("uv", 20.0, "pager", 32)
    assert torch.equal(loaded.predict(erp)["depth"], uv.predict(erp, face_size=32)["depth"])
