"""
The training utilities both scripts share: settings, device, its memory and precision, optimizer and
schedule, seeding, stop signals and FLOP measurement. (Run folders are in files.py, train_mlm.py's
checkpoints in checkpoints.py.)

train_mlm.py and finetune_cls.py are entry points; they import from here (and from model.py, data.py),
never from each other.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import sys
import time

from dataclasses import dataclass
from typing import ClassVar, Iterable

import numpy as np
import torch
import torch.distributed as dist

from cli import Terminated, UsageError
from model import physical_memory

PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# ----------------------------------------------------------------------------- settings


class Settings:
    """A run's settings, resolved once from the flags (and, on resume, the run's own): read-only, so
    that what the run logs and saves is what it used."""

    def __init__(self, **values):
        self.__dict__.update(values)

    def __setattr__(self, name, value):
        raise AttributeError(f"settings are resolved once and read-only (tried to set {name})")

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def fine_tuning_problem(v: dict) -> str | None:
    """What is wrong with the flags both fine-tuning scripts share (finetune_cls.py, finetune_ner.py), as the
    flag would say it; None when nothing is."""
    if not 0 < v["valid_fraction"] < 1 or not 0 <= v["warmup"] < 1:
        return "--valid-fraction must be in (0, 1) and --warmup in [0, 1)"
    if v["lr"] is not None and not 0 < v["lr"] < math.inf:
        return f"--lr must be positive, got {v['lr']}"
    if not 0 <= v["dropout"] < 1:
        return f"--dropout must be in [0, 1), got {v['dropout']}"
    if not 0 < v["clip"] < math.inf or not 0 <= v["weight_decay"] < math.inf:
        return f"--clip must be positive and --weight-decay not negative, got {v['clip']} and {v['weight_decay']}"
    for seed in [v["seed"], *(v.get("seeds") or [])]:
        if not 0 <= seed < 2 ** 32:
            return f"--seed{' and --seeds' if 'seeds' in v else ''} must be in [0, 2^32), got {seed}"
    if (v["valid"] or v["test"]) and not v["train"]:
        return "--valid and --test need --train"
    return None


# ----------------------------------------------------------------------------- device, precision, optimizer


def setup_device(name: str) -> torch.device:
    """--device: auto (cuda > mps > cpu; under torchrun, this process's GPU), or a device by name."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name}: not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {name}: MPS is not available on this machine")
    return device


def device_memory(device: torch.device) -> int | None:
    """The memory a model and its batches have on this device, in bytes: the GPU's, else the machine's."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return physical_memory()


def check_precision(precision: str, device: torch.device) -> None:
    if precision == "fp16" and device.type != "cuda":
        raise UsageError(f"--precision fp16 needs CUDA (device is {device}); use bf16 or fp32")


def autocast_for(device: torch.device, precision: str):
    """Mixed precision as --precision asks: bf16 or fp16 autocast, or nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=PRECISION_DTYPES[precision])


def make_optimizer(model, lr: float, weight_decay: float, device: torch.device) -> torch.optim.Optimizer:
    # As BERT: no weight decay on biases and LayerNorm (every 1-d parameter).
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = device.type in ("cuda", "cpu")  # the fused kernel: one launch for all parameters
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-6, fused=fused)


def lr_lambda(warmup_steps: int, total_steps: int, decay: float = 1.0):
    """Linear warmup, then a constant lr, then linear decay to zero over the last `decay` share of the
    steps after warmup. decay=1.0 is BERT's schedule: the decay starts right after warmup."""
    decay_steps = max(1, round(decay * (total_steps - warmup_steps)))

    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, min(1.0, (total_steps - step) / decay_steps))
    return f


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def measure_peak_flops(device: torch.device, dtype: torch.dtype) -> float:
    """The device's achievable matmul FLOP/s, measured: MFU is then relative to this machine."""
    n = 2048 if device.type == "cpu" else 8192
    # Its own generator: measuring must not move the training RNG streams.
    a = torch.randn(n, n, device=device, dtype=dtype, generator=torch.Generator(device).manual_seed(0))
    a @ a  # warm-up: thread pools, kernels, caches
    best = math.inf
    for _ in range(5):
        sync(device)
        t0 = time.perf_counter()
        a @ a
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


@dataclass
class Trainer:
    """What one fine-tuning run trains with: the model, its optimizer, schedule, gradient scaler and autocast,
    its settings and seed, where it logs (writer) and how it stops; step counts the optimizer steps taken.
    finetune_cls.py's and finetune_ner.py's runs alike: their batches differ, not their steps."""
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    autocast: object
    lr: float
    s: Settings
    seed: int
    device: torch.device
    stop: StopSignal
    writer: object = None
    step: int = 0
    LINE_EVERY: ClassVar[float] = 30.0  # seconds between the plain progress lines of a run whose output is a file

    @classmethod
    def start(cls, model, s: Settings, seed: int, total_steps: int, default_lr: float, device: torch.device,
              stop: StopSignal) -> "Trainer":
        """BERT's recipe: AdamW at --lr (else default_lr), linear warmup then decay over the run."""
        lr = s.lr or default_lr
        optimizer = make_optimizer(model, lr, s.weight_decay, device)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(int(s.warmup * total_steps), total_steps))
        scaler = torch.amp.GradScaler(device.type, enabled=s.precision == "fp16")
        return cls(model, optimizer, scheduler, scaler, autocast_for(device, s.precision), lr, s, seed, device, stop)

    def train_epoch(self, batches: Iterable[dict], steps: int, examples: int, epoch: int) -> float:
        """One pass over the train split's batches (model(**batch) returns (loss, logits)); train scalars every
        --log-interval steps; a stop signal acted on after each step. Returns the mean train loss per example."""
        s, model = self.s, self.model
        model.train()
        bar = not s.no_progress and sys.stderr.isatty()
        if bar:  # on a terminal; a log file gets a plain line every LINE_EVERY seconds instead
            from tqdm import tqdm
            batches = tqdm(batches, total=steps, desc=f"epoch {epoch}", leave=False, dynamic_ncols=True)
        loss_sum, seen, window, t_window = 0.0, 0, [], time.perf_counter()
        t_epoch = t_line = t_window
        for batch in batches:
            batch = {k: v.to(self.device) for k, v in batch.items()}
            with self.autocast:
                loss, _ = model(**batch)
            grad_norm = self.optimizer_step(loss)
            window.append((loss.item(), len(batch["labels"])))
            loss_sum, seen = loss_sum + window[-1][0] * window[-1][1], seen + window[-1][1]
            if self.step % s.log_interval == 0 or self.step % steps == 0:
                self.log_window(window, grad_norm, time.perf_counter() - t_window)
                window, t_window = [], time.perf_counter()
            if not bar and time.perf_counter() - t_line >= self.LINE_EVERY and self.step % steps:
                t_line = time.perf_counter()
                self.print_progress(epoch, steps, loss_sum / seen, t_line - t_epoch)
            self.stop.raise_if_stopped()
        return loss_sum / examples

    def optimizer_step(self, loss: torch.Tensor) -> float:
        """Backward, clip, step, zero, schedule; returns the gradient norm before clipping."""
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.s.clip).item()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        return grad_norm

    def print_progress(self, epoch: int, steps: int, loss: float, seconds: float) -> None:
        """A plain line for a log file: where the epoch is, its mean train loss so far, the rate, its ETA."""
        done = (self.step - 1) % steps + 1
        eta = int(seconds / done * (steps - done))
        print(f"epoch {epoch}, step {done}/{steps}: train loss {loss:.4f}, lr {self.scheduler.get_last_lr()[0]:.2e}, "
              f"{done / seconds:.1f} steps/s, epoch ETA {eta // 60}:{eta % 60:02d}", flush=True)

    def log_window(self, window: list[tuple[float, int]], grad_norm: float, seconds: float) -> None:
        """Train scalars of the steps since the last: mean loss, lr, gradient norm, examples per second."""
        self.writer.add_scalar("Loss/train", sum(loss for loss, _ in window) / len(window), self.step)
        self.writer.add_scalar("Optim/lr", self.scheduler.get_last_lr()[0], self.step)
        self.writer.add_scalar("Optim/grad_norm", grad_norm, self.step)
        self.writer.add_scalar("Perf/samples_per_sec", sum(n for _, n in window) / seconds, self.step)


class Timer:
    """Wall time per activity, to report what evaluation and visualisation cost next to training."""

    def __init__(self):
        self.seconds: dict[str, float] = {"eval": 0.0, "viz": 0.0}

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        yield
        self.seconds[name] += time.perf_counter() - t0


# ----------------------------------------------------------------------------- seeding


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- stop signals


class StopSignal:
    """Ctrl-C (SIGINT) and SIGTERM ask the training loop to finish its step, save and exit; a second
    Ctrl-C quits at once, without saving. install() before the loop, restore() the old handlers after."""

    def __init__(self, announce: bool = True):
        self.announce = announce
        self.signum = 0

    def install(self) -> None:
        self._old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}

    def restore(self) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)

    def _on_signal(self, signum, frame) -> None:
        self.signum = signum
        if self.announce:
            print(f"\n{signal.Signals(signum).name}: finishing this step, then saving "
                  "(Ctrl-C again quits without saving)", file=sys.stderr)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def raise_if_stopped(self) -> None:
        """For a run that is not resumable (fine-tuning): stop here, between steps, as on Ctrl-C (SIGTERM:
        Terminated). Raised from a safe point, never from inside a library (a TensorBoard writer interrupted
        mid-write can hang the exit)."""
        if self.signum == signal.SIGTERM:
            raise Terminated
        if self.signum:
            raise KeyboardInterrupt

    def agreed(self, device: torch.device) -> int:
        """The signal any process received (0: none): under DDP every rank stops at the same step."""
        return int(agreed_max(self.signum, device))


def agreed_max(value: float, device: torch.device) -> float:
    """The largest of every process's value (itself, in one process): what all ranks then act on alike."""
    if not dist.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.item()
