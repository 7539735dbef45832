"""Entrypoint for `ray job submit`: the same arguments as `raydenoise ingest`.

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/ingest.py --low s3://bucket/low --high s3://bucket/high --out s3://bucket/ds
"""

import sys

from raydenoise.cli import main

if __name__ == "__main__":
    sys.exit(main(["ingest", *sys.argv[1:]]))
