"""Render the bundled example panoramas (``pager/assets/examples/*.jpg``): the Gradio demo's three at
``2*height x height`` and ``indoor_room_1024.jpg`` (1024x512, the README's timing and ``make demo`` input).

    python scripts/make_examples.py [--height 256] [--out pager/assets/examples]

The scenes are procedural (``pager.data.synthetic``), so the examples carry no third-party content and
are bit-identical for the same arguments. Each JPG is ``2*height x height``; supersampling smooths edges.
"""
import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: (file name, seed, kind): chosen to show an indoor room and an outdoor scene with sky
EXAMPLES = (
    ("indoor_room.jpg", 3, "indoor"),
    ("indoor_hall.jpg", 11, "indoor"),
    ("outdoor_street.jpg", 7, "outdoor"),
)
#: (file name, seed, kind, height): full-size examples, independent of --height
LARGE_EXAMPLES = (("indoor_room_1024.jpg", 3, "indoor", 512),)


def main(argv=None) -> int:
    from pager.data.synthetic import render_scene
    from pager.export.files import save_image

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--height", type=int, default=256, help="ERP height in pixels (width = 2x)")
    ap.add_argument("--supersample", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "pager" / "assets" / "examples"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    jobs = [(name, seed, kind, args.height) for name, seed, kind in EXAMPLES] + list(LARGE_EXAMPLES)
    for name, seed, kind, height in jobs:
        pano = render_scene(seed, height=height, kind=kind, supersample=args.supersample)
        save_image(out / name, pano.rgb, quality=90)
        os.chmod(out / name, 0o644)  # package data: readable by everyone (temp files start as 0600)
        print(f"wrote {out / name} ({pano.rgb.shape[1]}x{pano.rgb.shape[0]}, {kind}, seed {seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
