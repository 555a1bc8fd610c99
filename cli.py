"""
The scripts' command-line conventions: help that shows defaults, usage errors, and one-line errors with
exit codes 1 (bad input), 2 (usage, as argparse), 130 (Ctrl-C) and 143 (SIGTERM, where a script asks),
and the errors they stand for. No torch and no project imports: every module may raise these.
"""

from __future__ import annotations

import argparse
import difflib
import signal
import sys
import unicodedata
from typing import Callable, Iterable


class DataError(ValueError):
    """Bad input data. str(e) is ONE line that names the file (and line number where there is one), e.g.
    'data/train.tsv:17: expected 2 columns (sentence, label), got 3'. Scripts catch it, print it and exit 1."""


class UsageError(ValueError):
    """A bad flag or flag combination: one line, exit 2 (as argparse)."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, except the empty ones (None, False) and those whose help says it."""

    def _get_help_string(self, action):
        if action.default in (None, False) or "default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, with the one line that matters: the error (a misspelled flag answered with the
    closest real one, 'did you mean --steps?'), then where every flag is listed, instead of a screenful of
    usage that scrolls the answer away. Exit code 2, as argparse."""

    def parse_known_args(self, args=None, namespace=None):
        self._argv = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str):
        flags = [option for action in self._actions for option in action.option_strings if option.startswith("--")]
        # A flag that is neither a flag nor the start of one (argparse takes --ste for --steps).
        unknown = [w.split("=")[0] for w in getattr(self, "_argv", []) if w.startswith("--") and w != "--"
                   and not any(f.startswith(w.split("=")[0]) for f in flags)]
        guesses = {w: difflib.get_close_matches(w, flags, n=1, cutoff=0.6) for w in unknown}
        if unknown:
            message = "; ".join(f"unknown flag {w}" + (f", did you mean {g[0]}?" if g else "")
                                for w, g in guesses.items())
        self.exit(2, f"{self.prog}: error: {message}\n(python {self.prog.split()[0]} "
                     f"{' '.join(self.prog.split()[1:]) + ' ' if len(self.prog.split()) > 1 else ''}--help lists every "
                     "flag)\n")


def not_positive(values: dict, names: Iterable[str]) -> str | None:
    """'--name must be positive, got v' for the first of `names` not above zero in `values` (None: all are):
    the check every script makes of its counts and sizes."""
    for name in names:
        if values[name] <= 0:
            return f"--{name.replace('_', '-')} must be positive, got {values[name]}"
    return None


def display_width(text: str) -> int:
    """Columns `text` takes on a terminal: two for a wide character (Chinese, Japanese, Korean)."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def pad(text: str, width: int) -> str:
    """text left-aligned in `width` terminal columns, as f"{text:<width}" for narrow characters."""
    return text + " " * max(0, width - display_width(text))


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


def run_predict(argv: list[str], parser: argparse.ArgumentParser, command: Callable[[argparse.Namespace], int],
                bad_input: tuple[type[Exception], ...]) -> int:
    """`<script> predict ...`: the fine-tuning scripts' shared second command, its flags checked alike."""
    args = parser.parse_args(argv)
    if args.max_length is not None and args.max_length < 4 or args.batch_size <= 0:
        parser.error("--max-length must be at least 4 and --batch-size positive")
    return run_cli(lambda: command(args), bad_input=bad_input)
