"""What every command shares: parse the flags, run, and turn a problem the user can fix into one line
(`PROG: error: ...`) and exit code 2, never a traceback.

    main = command("export.py", parser, run)                  # in each ddpm_ms/cli module
"""
from __future__ import annotations

import sys
from typing import Callable

from ddpm_ms.checkpoint import CheckpointMismatch, CheckpointUnreadable
from ddpm_ms.data import DataError
from ddpm_ms.device import DeviceUnavailable
from ddpm_ms.training.host_loop import NonFiniteLoss

# Problems with the user's input or machine, each of which the message says how to fix. Library errors
# that are ValueErrors (a checkpoint or pipeline from another config, a data set without a classifier)
# are among them.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, CheckpointMismatch, CheckpointUnreadable,
               DeviceUnavailable, NonFiniteLoss)


class FlagError(ValueError):
    """Flags that contradict each other or the config they change: argparse's usage line and the
    message, exit code 2 (as argparse reports a bad flag)."""


def command(prog: str, parser: Callable, run: Callable, data_flag: str = "--data", errors: tuple = ()) -> Callable:
    """The command's `main(argv=None) -> int`: `run(args)` on `parser()`'s parse of argv (which `run` also
    finds as `args.argv`, for the command it records), its return code, or 2 with one line for a
    DataError (worded with the command's data-folder flag `data_flag`), one of USER_ERRORS or one of the
    command's own `errors`; a FlagError exits as argparse does."""
    def main(argv=None) -> int:
        p = parser()
        args = p.parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)
        try:
            return run(args)
        except FlagError as e:
            p.error(str(e))
        except DataError as e:
            print(f"{prog}: error: {e.for_flag(data_flag)}", file=sys.stderr)
        except USER_ERRORS + tuple(errors) as e:
            print(f"{prog}: error: {e}", file=sys.stderr)
        return 2

    main.__doc__ = f"{prog}'s command line: see `{prog} --help`."
    return main
