"""`pager video`: decoding (mp4, folder, glob), outputs, resume after an interruption, the overwrite rule."""
import json
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

from pager.cli.main import main  # noqa: E402
from pager.video.io import VideoWriter, open_source  # noqa: E402

H, W, N = 32, 64, 5


def frames(n=N):
    """Frames with large flat blocks (lossless enough through H.264) that move right by 4 px per frame."""
    out = []
    for t in range(n):
        f = np.zeros((H, W, 3), np.uint8)
        f[:, :, 0] = 40
        f[:, (8 + 4 * t) % W: (8 + 4 * t) % W + 16, 1] = 200
        f[: H // 2, :, 2] = 120
        out.append(f)
    return out


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "walk.mp4"
    with VideoWriter(path, fps=12.0) as vw:
        for f in frames():
            vw.write(f)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from pager.model.tiny import build_tiny_checkpoint

    root = tmp_path_factory.mktemp("tiny")
    return str(build_tiny_checkpoint(root / "depth", "depth")), str(build_tiny_checkpoint(root / "normals", "normals", base_dir=root / "depth_base"))


def test_mp4_decodes_with_rate_count_and_selection(clip):
    src = open_source(clip)
    assert (src.kind, src.count, src.size, src.fps) == ("video", N, (H, W), 12.0)
    decoded = [rgb for _, _, rgb in src.frames()]
    assert len(decoded) == N
    for a, b in zip(decoded, frames()):
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 3.0  # lossy codec, flat blocks
    sel = open_source(clip, start=1, end=5, stride=2)
    assert sel.indices == [1, 3] and sel.output_fps == 6.0
    assert [i for _, i, _ in sel.frames()] == [1, 3]
    assert [k for k, _, _ in sel.frames(skip=1)] == [1]


def test_folder_and_glob_sources(tmp_path):
    from PIL import Image

    for i, f in enumerate(frames(3)):
        Image.fromarray(f).save(tmp_path / f"{i:04d}_rgb.png")
        Image.fromarray(f[..., 0]).save(tmp_path / f"{i:04d}_depth.png")
    assert len(open_source(tmp_path)) == 6  # a folder: every image
    src = open_source(str(tmp_path / "*_rgb.png"), fps=24)
    assert len(src) == 3 and src.fps == 24.0 and src.kind == "images"
    assert all(np.array_equal(a, b) for (_, _, a), b in zip(src.frames(), frames(3)))


@pytest.mark.parametrize("argv,match", [
    (["missing.mp4"], "missing.mp4"),
    (["{tmp}/notes.txt"], "not a video file"),
    (["{clip}", "--start", "9"], "no frames selected"),
    (["{clip}", "--stride", "0"], "--stride"),
    (["{tmp}/*.jpg"], "no files match"),
    (["{clip}", "--stitching", "reference", "--output_height", "17"], "multiple of 4"),
])
def test_bad_input_is_one_line_before_the_model_loads(argv, match, tmp_path, clip, capsys, monkeypatch):
    from pager.pipeline import PagerPipeline

    monkeypatch.setattr(PagerPipeline, "from_pretrained", classmethod(lambda *a, **k: pytest.fail("model loaded")))
    (tmp_path / "notes.txt").write_text("x")
    argv = [a.format(tmp=tmp_path, clip=clip) for a in argv]
    try:
        code = main(["video", *argv, "--out", str(tmp_path / "out")])
    except SystemExit as exc:  # options checked at parse time exit through argparse (usage line, then the error)
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("pager video: error:") and match in err


def run_video(clip, out, tiny, *extra):
    return main(["video", str(clip), "--out", str(out), "--checkpoint_path", *tiny, "--no_progress", *extra])


@pytest.mark.parametrize("filt", [[], ["--temporal_filter", "0.5"], ["--temporal_filter", "0.5", "--causal_filter"]],
                         ids=["no filter", "two-sided filter", "causal filter"])
def test_outputs_of_an_mp4(clip, tiny, tmp_path, filt):
    out = tmp_path / "out"
    assert run_video(clip, out, tiny, "--depth_png", "--pointcloud_every", "2", "--batch_size", "2", *filt) == 0
    depth = np.load(out / "depth.npy", mmap_mode="r")
    assert depth.shape == (N, H, W) and depth.dtype == np.float32
    assert np.load(out / "normals.npy", mmap_mode="r").shape == (N, H, W, 3)
    assert np.load(out / "depth_mask.npy").dtype == bool
    assert sorted(p.name for p in (out / "depth16").iterdir()) == [f"{k:06d}.png" for k in range(N)]
    assert sorted(p.name for p in (out / "pointclouds").iterdir()) == ["000000.ply", "000002.ply", "000004.ply"]
    for name in ("depth.mp4", "normals.mp4"):
        src = open_source(out / name)
        assert (src.count, src.size, src.fps) == (N, (H, W), 12.0)
    info = json.loads((out / "video.json").read_text())
    assert info["complete"] and info["done"] == N and len(info["scale"]) == N and info["scale"][0] == 1.0
    assert info["settings"]["options"]["pipeline_kwargs"] == {"stitching": "exact", "seam_blend": False}
    assert not list(out.glob(".*tmp*"))
    assert not list(out.glob(".*.npy"))  # the two-sided filter's working arrays are gone
    # the 16-bit PNGs hold the final depth (after the two-sided filter's backward pass)
    from pager.data.readers._io import read_png16

    from PIL import Image

    # the tiny checkpoint's range ends at 75 (relative units): 1000 steps per unit would clip above 65.535, so the
    # default scale is the next of 1000, 500, ... that holds 75: 500 (75 * 500 = 37500 <= 65535)
    assert info["depth_png_scale"] == 500.0
    mask = np.load(out / "depth_mask.npy")
    for k in range(N):
        path = out / "depth16" / f"{k:06d}.png"
        png = read_png16(path).astype(np.float64)
        np.testing.assert_allclose(png[mask[k]], np.round(depth[k][mask[k]] * 500.0), atol=1)
        with Image.open(path) as im:
            assert im.text["pager:depth_unit"] == "relative" and float(im.text["pager:depth_scale"]) == 500.0


def test_resume_after_an_interruption_gives_the_same_result(clip, tiny, tmp_path, monkeypatch, capsys):
    from pager.pipeline import PagerPipeline

    whole = tmp_path / "whole"
    assert run_video(clip, whole, tiny, "--temporal_filter", "0.5") == 0
    calls = []
    original = PagerPipeline.__call__

    def interrupted(self, images, *a, **k):
        calls.append(len(images))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, images, *a, **k)

    monkeypatch.setattr(PagerPipeline, "__call__", interrupted)
    part = tmp_path / "part"
    assert run_video(clip, part, tiny, "--temporal_filter", "0.5") == 130  # Ctrl-C: one line, exit status 130
    info = json.loads((part / "video.json").read_text())
    assert info["done"] == 2 and not info["complete"] and not (part / "depth.mp4").exists()
    calls.clear()
    monkeypatch.setattr(PagerPipeline, "__call__", original)
    counted = []
    monkeypatch.setattr(PagerPipeline, "__call__", lambda self, images, *a, **k: counted.append(len(images)) or original(self, images, *a, **k))
    assert run_video(clip, part, tiny, "--temporal_filter", "0.5") == 0
    assert sum(counted) == N - 2  # only the frames not yet written
    np.testing.assert_array_equal(np.load(part / "depth.npy"), np.load(whole / "depth.npy"))
    np.testing.assert_array_equal(np.load(part / "normals.npy"), np.load(whole / "normals.npy"))
    # a complete run is not redone
    capsys.readouterr()
    assert run_video(clip, part, tiny, "--temporal_filter", "0.5") == 0
    assert "nothing to do" in capsys.readouterr().out


def test_overwrite_rule(clip, tiny, tmp_path, capsys, monkeypatch):
    from pager.pipeline import PagerPipeline

    out = tmp_path / "out"
    out.mkdir()
    (out / "depth.mp4").write_bytes(b"someone else's file")
    real = PagerPipeline.from_pretrained
    monkeypatch.setattr(PagerPipeline, "from_pretrained", classmethod(lambda *a, **k: pytest.fail("model loaded")))
    assert run_video(clip, out, tiny) == 2
    assert str(out / "depth.mp4") in capsys.readouterr().err
    monkeypatch.setattr(PagerPipeline, "from_pretrained", real)
    assert run_video(clip, out, tiny, "--overwrite", "--no_video") == 0
    monkeypatch.setattr(PagerPipeline, "from_pretrained", classmethod(lambda *a, **k: pytest.fail("model loaded")))
    assert run_video(clip, out, tiny, "--no_video", "--stride", "2") == 2  # other settings: refused, named
    err = capsys.readouterr().err
    assert str(out / "video.json") in err and "start_end_stride" in err


def test_seam_blend_reaches_the_pipeline(clip, tiny, tmp_path, monkeypatch):
    from pager.pipeline import PagerPipeline

    seen = []
    original = PagerPipeline.__call__
    monkeypatch.setattr(PagerPipeline, "__call__", lambda self, images, *a, **k: seen.append(k) or original(self, images, *a, **k))
    assert run_video(clip, tmp_path / "out", tiny, "--seam_blend", "--end", "2", "--no_video") == 0
    assert seen and all(k["seam_blend"] is True and k["stitching"] == "exact" for k in seen)


def test_image_folder_end_to_end(tiny, tmp_path):
    from PIL import Image

    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(frames(3)):
        Image.fromarray(f).save(folder / f"{i:04d}.png")
    out = tmp_path / "out"
    assert main(["video", str(folder), "--out", str(out), "--checkpoint_path", tiny[0], "--no_progress", "--fps", "5",
                 "--no_arrays"]) == 0
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["depth.mp4", "video.json"]
    assert open_source(out / "depth.mp4").fps == 5.0


def test_app_video_input_has_a_frame_limit(clip, tiny, tmp_path):
    from pager.app.core import DemoPredictor
    from pager.pipeline import PagerPipeline

    predictor = DemoPredictor(PagerPipeline.from_pretrained({"depth": tiny[0], "normals": tiny[1]}), output_root=tmp_path)
    res = predictor.run_video(clip, max_frames=3)
    assert set(res.videos) == {"depth", "normals"} and res.files == list(res.videos.values())
    assert open_source(res.videos["depth"]).count == 3
    assert "the first 3 of 5" in res.message
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(ValueError, match="Cannot read the video clip.mp4"):
        predictor.run_video(bad)
    with pytest.raises(ValueError, match="No video given"):
        predictor.run_video(None)


@pytest.mark.parametrize("kind", ["folder", "glob"])
def test_frame_of_another_size_named_before_loading(tmp_path, capsys, monkeypatch, kind):
    """An image sequence with one frame of another size is refused naming that file, before the model loads
    (it used to stop after the earlier frames were predicted, naming no file)."""
    from PIL import Image

    from pager.pipeline import PagerPipeline

    def no_loading(*a, **k):
        raise AssertionError("the model must not be loaded")

    monkeypatch.setattr(PagerPipeline, "from_pretrained", classmethod(no_loading))
    folder = tmp_path / "frames"
    folder.mkdir()
    for k, (h, w) in enumerate([(H, W), (H, W), (H + 1, W + 2)]):
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(folder / f"{k:03d}.png")
    spec = str(folder) if kind == "folder" else str(folder / "*.png")
    with pytest.raises(ValueError, match=rf"002\.png: frame of {W + 2}x{H + 1} pixels in a sequence of {W}x{H}"):
        open_source(spec)
    assert open_source(spec, end=2).count == 3  # the odd frame not selected: accepted
    assert main(["video", spec, "--out", str(tmp_path / "o"), "--no_video"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "002.png: frame of" in err[0]
    assert not (tmp_path / "o").exists()
