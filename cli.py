"""
The scripts' command-line conventions: help that shows defaults, usage errors, and one-line errors with
exit codes 1 (bad input), 2 (usage, as argparse) and 130 (Ctrl-C). No torch: prepare_data.py uses it too.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from tokenization import DataError


class UsageError(ValueError):
    """A bad flag or flag combination: one line, exit 2 (as argparse)."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, except the empty ones (None, False) whose help says what happens."""

    def _get_help_string(self, action):
        return action.help if action.default in (None, False) else super()._get_help_string(action)


def run_cli(command: Callable[[], int], bad_input: tuple[type[Exception], ...] = (DataError,),
            interrupted: str = "interrupted") -> int:
    """Run a script's command with the project's exit codes, each said in one line: 1 for bad input (data,
    and for the training scripts a bad checkpoint), 2 for a usage error (as argparse), 130 for Ctrl-C
    before anything could be saved."""
    try:
        return command()
    except bad_input as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{interrupted}", file=sys.stderr)
        return 130
