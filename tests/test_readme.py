"""The README's Python API block runs as pasted (from the checkout root), and its commands name real files."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _python_blocks(section: str):
    body = README.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


def test_python_api_block_runs(monkeypatch):
    (code,) = _python_blocks("Python API")
    monkeypatch.chdir(ROOT)
    namespace: dict = {}
    exec(compile(code, "README.md (Python API)", "exec"), namespace)
    out = namespace["out"]
    assert out.depth.shape == (2, 256, 512) and out.normals.shape == (2, 256, 512, 3)
    assert out.mask.shape == (2, 256, 512) and out.mask.dtype == bool
    n = out.normals[out.mask]
    assert np.allclose(np.linalg.norm(n, axis=-1), 1.0, atol=1e-3)


def test_readme_example_files_exist():
    for rel in sorted(set(re.findall(r"pager/assets/examples/[\w.]+\.jpg", README))):
        assert (ROOT / rel).is_file(), rel
    from PIL import Image

    assert Image.open(ROOT / "pager/assets/examples/indoor_room_1024.jpg").size == (1024, 512)
