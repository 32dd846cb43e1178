"""The Gradio demo: ``python app.py`` or ``pager app`` (see :mod:`pager.app.cli`).

:mod:`pager.app.core` holds the UI-free logic (input checks, prediction, output files),
:mod:`pager.app.demo` the ``gr.Blocks`` page. Gradio is imported only when the page is built.
"""
from pager.app.core import DemoPredictor, DemoResult, example_images, load_panorama

__all__ = ["DemoPredictor", "DemoResult", "example_images", "load_panorama"]
