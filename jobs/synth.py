"""Entrypoint for `ray job submit`: the same arguments as `raydenoise synth`."""

import sys

from raydenoise.cli import main

if __name__ == "__main__":
    sys.exit(main(["synth", *sys.argv[1:]]))
