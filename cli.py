"""
The scripts' command-line conventions: help that shows defaults, usage errors, and one-line errors with
exit codes 1 (bad input), 2 (usage, as argparse), 130 (Ctrl-C) and 143 (SIGTERM, where a script asks),
and the errors they stand for. No torch and no project imports: every module may raise these.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Callable


class DataError(ValueError):
    """Bad input data. str(e) is ONE line that names the file (and line number where there is one), e.g.
    'data/train.tsv:17: expected 2 columns (sentence, label), got 3'. Scripts catch it, print it and exit 1."""


class UsageError(ValueError):
    """A bad flag or flag combination: one line, exit 2 (as argparse)."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, except the empty ones (None, False) whose help says what happens."""

    def _get_help_string(self, action):
        return action.help if action.default in (None, False) else super()._get_help_string(action)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's pre-emption, `kill`) raised as an exception, so that a script stops as on
    Ctrl-C: what it wrote is complete (every file is written atomically), and it says so in one line."""


def _raise_terminated(signum, frame):
    raise Terminated


def run_cli(command: Callable[[], int], bad_input: tuple[type[Exception], ...] = (DataError,),
            interrupted: str = "interrupted", sigterm: bool = False) -> int:
    """Run a script's command with the project's exit codes, each said in one line: 1 for bad input (data,
    and for the training scripts a bad checkpoint), 2 for a usage error (as argparse), 130 for Ctrl-C
    and, with sigterm=True, 143 for SIGTERM (raised as Terminated), before anything could be saved."""
    old = signal.signal(signal.SIGTERM, _raise_terminated) if sigterm else None
    try:
        return command()
    except bad_input as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Terminated:
        print("\nterminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"\n{interrupted}", file=sys.stderr)
        return 130
    finally:
        if sigterm:
            signal.signal(signal.SIGTERM, old)
