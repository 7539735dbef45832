"""Entrypoint for `ray job submit`: the same arguments as `raydenoise evaluate`.

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/evaluate.py --data s3://bucket/lol-parquet --model s3://bucket/runs/unet/model --split test
"""

import sys

from raydenoise.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
