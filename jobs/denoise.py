"""Entrypoint for `ray job submit`: the same arguments as `raydenoise denoise`.

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/denoise.py --input s3://bucket/noisy --output s3://bucket/clean \
        --model s3://bucket/runs/unet/model --workers 4 --num-gpus-per-worker 1
"""

import sys

from raydenoise.cli import main

if __name__ == "__main__":
    sys.exit(main(["denoise", *sys.argv[1:]]))
