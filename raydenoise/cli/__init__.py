"""The ``raydenoise`` command line: each subcommand builds its config and calls one function."""

from .help import EXAMPLES
from .main import main
from .parser import build_parser

__all__ = ["EXAMPLES", "build_parser", "main"]
