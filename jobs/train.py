"""Entrypoint for `ray job submit`: the same arguments as `raydenoise train`.

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/train.py --data s3://bucket/ds --model unet --storage-path s3://bucket/runs \
        --name unet-1 --num-workers 4 --use-gpu --max-failures 3
"""

import sys

from raydenoise.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
