"""Video evaluation: per-frame AbsRel / delta1 and flicker of depth videos on `pager synth --sequence` data.

`python evaluation/video_evaluation.py --data_path SEQS --predict` (independent vs aligned vs filtered, one model
run) or `--pred_path OUT` (outputs of `pager video`); `--help` lists every option. The work is done by
:func:`pager.evaluation.video_runner.main`.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from pager.evaluation.video_runner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
