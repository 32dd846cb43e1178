"""Point clouds from PaGeR predictions (as in the original README); see ``pager pointcloud --help``.

    python generate_point_cloud.py --data_path DATA --dataset NAME --color_modality rgb|normals \
        --depth_path RESULTS/DEPTH_CKPT --normals_path RESULTS/NORMALS_CKPT [--max_points N] [--format glb|ply]
"""
import sys

from pager.cli.pointcloud import main

if __name__ == "__main__":
    sys.exit(main())
