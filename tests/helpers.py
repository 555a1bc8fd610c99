"""Helpers shared by the test files (plain functions; the fixtures are in conftest.py)."""

import os

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import train_mlm


def scalars(run_dir, tag):
    ea = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    ea.Reload()
    return {e.step: e.value for e in ea.Scalars(tag)}


def signal_at_batch(monkeypatch, n: int, sig: int) -> None:
    """Send `sig` to this process while the training loop draws its n-th batch (it takes them here)."""
    calls = {"n": 0}
    next_batch = train_mlm.Prefetcher.next_batch

    def next_batch_then_signal(self):
        calls["n"] += 1
        if calls["n"] == n:
            os.kill(os.getpid(), sig)
        return next_batch(self)
    monkeypatch.setattr(train_mlm.Prefetcher, "next_batch", next_batch_then_signal)


def small_run_argv(corpus, out_dir, name, *extra):
    return ["--data", str(corpus), "--config", "tiny", "--hidden", "32", "--heads", "2", "--seq-len", "32",
            "--batch-size", "4", "--vocab-size", "300", "--max-predictions", "5", "--eval-batches", "2",
            "--steps", "10", "--eval-interval", "5", "--viz-interval", "0", "--log-interval", "1",
            "--save-interval", "100", "--no-progress", "--cache-dir", str(corpus.parent / "cache"),
            "--out-dir", str(out_dir), "--run-name", name, *extra]
