"""The Gradio Blocks page of the PaGeR demo (UI only; the work is done by :class:`pager.app.core.DemoPredictor`)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, List, Optional, Sequence

from pager.app.core import DEFAULT_MAX_VIDEO_FRAMES, DemoPredictor, example_images, load_panorama

logger = logging.getLogger(__name__)

TITLE = "PaGeR: 360° panorama geometry"
DESCRIPTION = (
    "Upload an equirectangular (2:1) panorama or pick an example, choose the outputs and press **Predict**. "
    "You get the depth map (with a colour bar), surface normals, an interactive 3D point cloud, and the "
    "raw results to download (16-bit depth PNG, `.npz`, normals PNG, GLB)."
)

CSS = """
#pager-status {min-height: 2em}
#pager-error {color: #b91c1c; font-weight: 600}
"""


def _theme(gr: Any) -> Any:
    """A theme with system fonts only, so the page needs no internet (no Google Fonts)."""
    system = ["ui-sans-serif", "system-ui", "sans-serif"]
    mono = ["ui-monospace", "monospace"]
    return gr.themes.Default(font=system, font_mono=mono)


def build_demo(predictor: DemoPredictor, examples: Optional[Sequence[Path]] = None, seam_blend: bool = False) -> Any:
    """Build the ``gr.Blocks`` page around ``predictor``; ``examples`` default to the bundled panoramas;
    ``seam_blend`` is the initial state of the "hide cube seams" box."""
    import gradio as gr

    examples = list(examples) if examples is not None else example_images()
    available = [m for m in ("depth", "normals") if m in predictor.modalities]

    def preview(path: Optional[str]):
        """Show the uploaded panorama, or an error message instead of it."""
        if not path:
            return None, ""
        try:
            return load_panorama(path, predictor.max_file_mb, predictor.max_megapixels), ""
        except ValueError as exc:
            return None, f"⚠️ {exc}"

    def predict(path: Optional[str], modalities: List[str], point_cloud: bool, color_by: str, max_points: float,
                keep_invalid: bool, seams: bool, progress: gr.Progress = gr.Progress(track_tqdm=True)):
        def report(frac: float, text: str) -> None:
            progress(frac, desc=text)

        try:
            res = predictor.run(path, modalities, point_cloud=point_cloud, color_by=color_by,
                                max_points=int(max_points), progress=report, keep_invalid=bool(keep_invalid),
                                seam_blend=bool(seams))
        except ValueError as exc:
            raise gr.Error(str(exc), duration=None, print_exception=False) from None
        except Exception as exc:  # never crash the page: show what went wrong
            logger.exception("prediction failed")
            raise gr.Error(f"Prediction failed: {type(exc).__name__}: {exc}", duration=None) from None
        return (
            res.depth_image,
            res.normals_image,
            str(res.point_cloud) if res.point_cloud else None,
            [str(f) for f in res.files],
            res.message,
            "",
        )

    predictor_video_limit = DEFAULT_MAX_VIDEO_FRAMES

    def predict_video(path: Optional[str], stride: float, smooth: float, progress: gr.Progress = gr.Progress(track_tqdm=True)):
        try:
            res = predictor.run_video(path, stride=int(stride), temporal_filter=float(smooth))
        except ValueError as exc:
            raise gr.Error(str(exc), duration=None, print_exception=False) from None
        except Exception as exc:  # never crash the page
            logger.exception("video prediction failed")
            raise gr.Error(f"Prediction failed: {type(exc).__name__}: {exc}", duration=None) from None
        vid = lambda m: str(res.videos[m]) if m in res.videos else None  # noqa: E731
        return vid("depth"), vid("normals"), res.message

    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(f"# {TITLE}\n{DESCRIPTION}")
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Panorama (equirectangular, 2:1)", file_types=["image"], type="filepath",
                                 elem_id="pager-upload")
                shown = gr.Image(label="Input", interactive=False, elem_id="pager-input")
                error = gr.Markdown("", elem_id="pager-error")
                mods = gr.CheckboxGroup(available, value=available, label="Outputs", elem_id="pager-modalities")
                with gr.Row():
                    cloud = gr.Checkbox(value="depth" in available, label="3D point cloud", elem_id="pager-cloud")
                    color_by = gr.Radio(["rgb", "normals"], value="rgb", label="Colour points by")
                max_points = gr.Slider(1000, 1_000_000, value=200_000, step=1000, label="Maximum points")
                keep_invalid = gr.Checkbox(value=False, label="Keep invalid pixels (sky, out of range; grey in the "
                                           "depth view) in the point cloud", elem_id="pager-keep-invalid")
                seams = gr.Checkbox(value=bool(seam_blend), label="Hide cube seams (a second, blended pass: about 2x time)",
                                    elem_id="pager-seam-blend")
                run = gr.Button("Predict", variant="primary", elem_id="pager-run")
                if examples:
                    gr.Examples(examples=[[str(p)] for p in examples], inputs=[upload], label="Examples")
            with gr.Column(scale=2):
                status = gr.Markdown("", elem_id="pager-status")
                with gr.Row():
                    depth_img = gr.Image(label="Depth", interactive=False, elem_id="pager-depth")
                    normals_img = gr.Image(label="Normals", interactive=False, elem_id="pager-normals")
                model3d = gr.Model3D(label="Point cloud (drag to rotate, scroll to zoom)", display_mode="point_cloud",
                                     clear_color=(0.08, 0.08, 0.1, 1.0), height=420, elem_id="pager-3d")
                downloads = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="pager-downloads")

        with gr.Accordion("360° video (short clips)", open=False, elem_id="pager-video"):
            gr.Markdown(f"Depth and normals videos of a short equirectangular clip, one frame after the other "
                        f"(the first {predictor_video_limit} frames at most; use `pager video` for long videos).")
            with gr.Row():
                with gr.Column(scale=1):
                    video_in = gr.File(label="360° clip (mp4, mov, webm, mkv)", file_types=["video"], type="filepath",
                                       elem_id="pager-video-upload")
                    stride = gr.Slider(1, 10, value=1, step=1, label="Use every N-th frame")
                    smooth = gr.Slider(0.0, 0.9, value=0.0, step=0.1, label="Temporal filter strength (0 = off)")
                    video_run = gr.Button("Predict video", elem_id="pager-video-run")
                with gr.Column(scale=2):
                    video_status = gr.Markdown("", elem_id="pager-video-status")
                    with gr.Row():
                        depth_vid = gr.Video(label="Depth", interactive=False, elem_id="pager-video-depth")
                        normals_vid = gr.Video(label="Normals", interactive=False, elem_id="pager-video-normals")
        video_run.click(
            predict_video,
            inputs=[video_in, stride, smooth],
            outputs=[depth_vid, normals_vid, video_status],
            concurrency_limit=1,
        )
        upload.change(preview, inputs=[upload], outputs=[shown, error])
        run.click(
            predict,
            inputs=[upload, mods, cloud, color_by, max_points, keep_invalid, seams],
            outputs=[depth_img, normals_img, model3d, downloads, status, error],
            concurrency_limit=1,
        )
    return demo
