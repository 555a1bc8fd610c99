"""A batch-size ramp trial: train_mlm.py with batches growing from 16 to --batch-size sequences.

    python bench/batch_ramp.py --ramp-steps 1358 --steps 2263 --run-name eq-ramp    # + any train_mlm.py flags

The recipe's fifth round (docs/fine-tuning.md) measured it against the default run and lost, so it is a trial
kept here to be re-run, not a train_mlm.py flag: the first --ramp-steps steps take batches that grow linearly from
16 sequences to --batch-size (48), the rest take --batch-size; the learning-rate schedule is laid over --steps as
usual. Prints the sequences the run will read, so that --steps can be chosen to read as many as a default run
(1,810 steps of 48 = 86,880: 1,358 ramp steps read 43,440, then 905 steps of 48). A fresh run only: --resume
would restart the ramp. The log's tokens/s counts every step as a full batch.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import data  # noqa: E402
import train_mlm  # noqa: E402

SMALLEST = 16


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a whole number of steps, 1 or more, not {text!r}")
    return int(text)


def ramp(ramp_steps: int, largest: int, grad_accum: int):
    """The size of the k-th batch (grad_accum batches a step): SMALLEST at the first step, rising linearly to
    `largest` at step ramp_steps."""
    def size(k: int) -> int:
        step = k // grad_accum
        return largest if step >= ramp_steps else round(SMALLEST + (largest - SMALLEST) * step / ramp_steps)
    return size


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench/batch_ramp.py", usage="%(prog)s --ramp-steps N --steps M "
                                "[train_mlm.py flags, not --resume or --minutes]")
    p.add_argument("--ramp-steps", type=positive, required=True, help="steps over which batches grow")
    ours, argv = p.parse_known_args(argv)
    args = train_mlm.parse_args(argv)
    if "steps" not in args.given or args.resume or args.minutes is not None:
        p.error("give --steps, and neither --resume nor --minutes: the ramp is laid over a fresh run's steps")
    size = ramp(ours.ramp_steps, args.batch_size, args.grad_accum)
    print(f"batch ramp: {SMALLEST} -> {args.batch_size} sequences over {ours.ramp_steps} steps; "
          f"{sum(size(k) for k in range(args.steps * args.grad_accum)):,} sequences in {args.steps} steps")

    class RampedPrefetcher(data.Prefetcher):  # the training loop's batches; evaluation keeps --batch-size
        def __init__(self, pretraining_data, batch_size, **kw):
            super().__init__(pretraining_data, size, **kw)

    train_mlm.Prefetcher = RampedPrefetcher
    return train_mlm.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
