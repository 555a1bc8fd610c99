"""Helpers shared by the test files (plain functions; the fixtures are in conftest.py)."""

import os
import signal
import subprocess
import sys
import time

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


def signal_when(hook: str, argv: list[str], marker, sig: int = signal.SIGKILL, cwd: str | None = None,
                env: dict | None = None, capture: bool = False) -> subprocess.Popen:
    """Run `python -c hook argv...`, and send it `sig` as soon as it creates the file `marker` (the hook patches
    the moment to stop at). Returns the process, signalled; the caller waits for it."""
    out = subprocess.PIPE if capture else subprocess.DEVNULL
    proc = subprocess.Popen([sys.executable, "-c", hook, *argv], cwd=cwd, env=env, stdout=out, stderr=out, text=True)
    deadline = time.time() + 120
    while not os.path.exists(marker):
        assert proc.poll() is None and time.time() < deadline, proc.communicate() if capture else proc.returncode
        time.sleep(0.05)
    proc.send_signal(sig)
    return proc
