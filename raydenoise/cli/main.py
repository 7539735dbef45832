"""The entry point: parse, run the command, and turn every outcome into one line and an exit status
(user mistakes: 1, interrupted: 130, SIGTERM: 143, bugs: 2 with the traceback in the log).
"""

from __future__ import annotations

import sys
import traceback

from ..console import capture, console, release
from ..errors import RaydenoiseError
from .commands import COMMANDS, RAY_COMMANDS
from .parser import build_parser
from .signals import _terminate_as_interrupt

# The user's mistakes (bad arguments, data, models, storage, cluster): one line, no traceback.
# Anything else is a bug of ours and keeps its traceback.
USER_ERRORS = (RaydenoiseError,)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    terminated = _terminate_as_interrupt()
    if args.command in RAY_COMMANDS and not args.verbose:
        capture(args.command)  # Ray's log stream goes to a file; the terminal keeps our lines
    try:
        return COMMANDS[args.command](args)
    except USER_ERRORS as exc:
        console().error(f"raydenoise {args.command}: error: {exc}")
        return 1
    except KeyboardInterrupt:
        if terminated:
            console().error(
                f"raydenoise {args.command}: terminated (SIGTERM); what was done is kept, rerun to resume"
            )
            return 143
        console().error(f"raydenoise {args.command}: interrupted")
        return 130
    except Exception as exc:  # a bug, not a user mistake: say so, and where the traceback is
        path = console().log_path
        if path:
            traceback.print_exc()  # into the log file
        else:
            traceback.print_exc(file=console().err)
        console().error(
            f"raydenoise {args.command}: internal error: {type(exc).__name__}: {exc}"
            + (f" (traceback in {path})" if path else "")
        )
        return 2
    finally:
        ray = sys.modules.get("ray")
        if console().log_path and ray is not None and ray.is_initialized():
            ray.shutdown()  # while captured: Ray's shutdown lines go to the log file too
        release()
