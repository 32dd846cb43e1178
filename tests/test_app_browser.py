"""The Gradio demo in a real headless Chromium: example -> depth, normals, 3D view and downloads; bad uploads -> messages.

Needs Debian's ``chromium`` (``apt-get install chromium chromium-driver``) and the playwright Python package;
the app runs in a process of its own (``python app.py``, forked from the suite's script server) on a free localhost
port with tiny random checkpoints (CPU).
"""
import os
import socket
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"headless browser test needs {CHROMIUM} (apt-get install chromium)"),
]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, script_runner):
    pytest.importorskip("playwright.sync_api")
    from pager.model.tiny import build_tiny_checkpoint

    root = tmp_path_factory.mktemp("app")
    depth = build_tiny_checkpoint(root / "depth", "depth")
    normals = build_tiny_checkpoint(root / "normals", "normals", base_dir=root / "depth_base")
    port = _free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    # python app.py ... in a process of its own, forked from the suite's script server (torch / diffusers imported)
    app = script_runner.start(
        REPO / "app.py", ["--checkpoint_path", str(depth), "--normals_checkpoint_path", str(normals), "--port", str(port),
                          "--device", "cpu", "--output_dir", str(root / "outputs")],
        cwd=root, env=env, output=root / "app.log",
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 180
    try:
        while True:
            if not app.running():
                pytest.fail(f"app exited:\n{(root / 'app.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail(f"app did not start within 180 s:\n{(root / 'app.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        app.terminate()


@pytest.fixture(scope="module")
def browser(app_url):
    """One headless Chromium for the module's tests (each test gets its own fresh browser context and page)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture()
def page(browser, app_url):
    context = browser.new_context(viewport={"width": 1400, "height": 1400})  # no cookies/storage shared between tests
    pg = context.new_page()
    pg.goto(app_url)
    pg.wait_for_selector("#pager-run", timeout=60_000)
    yield pg
    context.close()


def test_example_prediction_shows_results_and_downloads(page, app_url, tmp_path):
    page.get_by_text("indoor_room.jpg").first.click()  # a bundled example
    page.wait_for_selector("#pager-input img", timeout=30_000)  # preview of the loaded panorama
    page.click("#pager-run")
    page.wait_for_selector("#pager-downloads >> text=pager_pointcloud", timeout=180_000)
    # depth (with colour bar) and normals images are displayed and have content
    for elem in ("#pager-depth img", "#pager-normals img"):
        img = page.locator(elem).first
        img.wait_for(state="visible", timeout=30_000)
        page.wait_for_function(f"() => {{ const e = document.querySelector('{elem}'); return e && e.complete && e.naturalWidth > 0; }}",
                               timeout=30_000)
        width = img.evaluate("e => e.naturalWidth")
        assert width >= 512, (elem, width)
    assert page.locator("#pager-depth img").first.evaluate("e => e.naturalWidth") > 512  # colour bar appended
    # the 3-D view has a WebGL canvas with the point cloud loaded
    canvas = page.locator("#pager-3d canvas").first
    canvas.wait_for(state="visible", timeout=30_000)
    box = canvas.bounding_box()
    assert box["width"] > 200 and box["height"] > 200
    # the downloads are listed and can be fetched from the server
    text = page.locator("#pager-downloads").inner_text()
    for name in ("pager_depth_16bit", "pager_prediction", "pager_normals", "pager_pointcloud", "pager_depth_color"):
        assert name in text
    hrefs = page.locator("#pager-downloads a").evaluate_all("els => els.map(e => e.href)")
    assert any(h.endswith(".glb") for h in hrefs) and any(h.endswith(".npz") for h in hrefs), hrefs
    for href in hrefs:
        with urllib.request.urlopen(href, timeout=10) as r:
            assert r.status == 200 and len(r.read()) > 100
    status = page.locator("#pager-status").inner_text()
    assert "512x256" in status and "points" in status
    time.sleep(1.0)  # let the 3-D view render before the screenshot
    shot = tmp_path / "app_result.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


def test_invalid_uploads_show_error_messages(page, tmp_path):
    fake = tmp_path / "holiday.jpg"
    fake.write_text("this is a text file, not a JPEG")
    page.locator("#pager-upload input[type=file]").set_input_files(str(fake))
    page.wait_for_selector("#pager-error >> text=not a readable image", timeout=30_000)
    page.click("#pager-run")  # predicting anyway: an error message in the page, no crash
    page.get_by_text("holiday.jpg is not a readable image").last.wait_for(timeout=30_000)
    page.screenshot(path=str(tmp_path / "app_error.png"), full_page=True)

    square = tmp_path / "square.png"
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(square)
    page.reload()  # a fresh, empty upload field
    page.wait_for_selector("#pager-run", timeout=60_000)
    page.locator("#pager-upload input[type=file]").set_input_files(str(square))
    page.wait_for_selector("#pager-error >> text=not an equirectangular", timeout=30_000)
    # the server is still alive and serving
    assert page.locator("#pager-run").is_visible()
