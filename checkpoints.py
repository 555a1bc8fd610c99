"""
train_mlm.py's checkpoints: what one holds, how it is written (whole) and read (never running code from
the file), where a run's checkpoints are, and which are kept: the last --keep-last along the line of
training, best.pt, and the one a resumed run started from.

A checkpoint is a dict of tensors and plain Python values (numbers, strings, lists, dicts), which
torch.load(weights_only=True) reads without executing anything. Files written before RNG states were
kept as tensors hold numpy's as an array: the three numpy names that rebuild an array are allowed for
them, and nothing else.
"""

from __future__ import annotations

import io
import os
import random
import re
import zipfile

import numpy as np
import torch
import torch.distributed as dist

from cli import UsageError
from files import atomic_write
from model import CheckpointError, first_line, torch_load

STEP_FILE = re.compile(r"step_(\d+)\.pt")
# What every checkpoint holds, and its type: a file without these is not one of ours.
PARTS = {"model": dict, "optimizer": dict, "scaler": dict, "data": dict, "step": int, "rng": (dict, list),
         "best_valid_loss": (int, float), "config": dict, "args": dict, "vocab": str}
# numpy's array reconstruction, under its numpy 2 and numpy 1 names: old checkpoints' numpy RNG key.
_NUMPY_ARRAY = [(np._core.multiarray._reconstruct, "numpy._core.multiarray._reconstruct"),
                (np._core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
                np.ndarray, np.dtype, np.dtypes.UInt32DType]


def step_name(step: int) -> str:
    return f"step_{step:07d}.pt"


def step_checkpoints(folder: str) -> list[tuple[int, str]]:
    """(step, path) of the step_N.pt files in folder, by step (not by name)."""
    if not os.path.isdir(folder):
        return []
    found = [(int(m.group(1)), os.path.join(folder, name)) for name in os.listdir(folder)
             if (m := STEP_FILE.fullmatch(name))]
    return sorted(found)


def checkpoint_parent(checkpoint: str) -> str | None:
    """The folder above the checkpoint's checkpoints/ (<folder>/checkpoints/<file>), or None."""
    folder = os.path.dirname(os.path.abspath(checkpoint))
    return os.path.dirname(folder) if os.path.basename(folder) == "checkpoints" else None


def is_run_folder(folder: str) -> bool:
    """Whether a folder is a train_mlm.py run's: it has the lock, the corpus record or TensorBoard events a run
    writes first. (A folder that merely holds a checkpoints/ folder is not: resuming from it would write there.)"""
    try:
        names = os.listdir(folder)
    except OSError:
        return False
    return ".lock" in names or "corpus.json" in names or any(n.startswith("events.out.tfevents.") for n in names)


def run_home(checkpoint: str) -> str | None:
    """The run folder a checkpoint file belongs to (<run>/checkpoints/<file> in a run folder), or None for a
    loose file."""
    parent = checkpoint_parent(checkpoint)
    return parent if parent and is_run_folder(parent) else None


def find_checkpoint(path: str) -> str:
    """--resume PATH: a checkpoint file, or a run folder (its newest checkpoints/step_N.pt)."""
    if os.path.isfile(path):
        return path
    if not os.path.isdir(path):
        raise UsageError(f"--resume {path}: no such file or folder" + _runs_nearby(os.path.dirname(path) or "."))
    steps = step_checkpoints(os.path.join(path, "checkpoints"))
    if not steps:
        raise UsageError(f"--resume {path}: no checkpoint file, and no checkpoints/step_*.pt in that folder"
                         + _runs_nearby(os.path.dirname(os.path.abspath(path))))
    return steps[-1][1]


def _runs_nearby(folder: str) -> str:
    """'; runs with checkpoints in folder: a, b' (the first five), or nothing."""
    try:
        names = sorted(n for n in os.listdir(folder) if step_checkpoints(os.path.join(folder, n, "checkpoints")))
    except OSError:
        return ""
    if not names:
        return ""
    return f"; runs with checkpoints in {folder}: {', '.join(names[:5])}" + (", ..." if len(names) > 5 else "")


def save_checkpoint(path: str, state: dict) -> None:
    """Serialised in memory, then written atomically: a crash leaves the old file or the new, never half."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write(path, lambda f: f.write(buf.getbuffer()))


def load_checkpoint(path: str) -> dict:
    """A train_mlm.py checkpoint, read without running anything from the file, and checked to be one:
    CheckpointError (one line naming the file) otherwise. For a damaged file, an older checkpoint beside
    it is named to resume from instead."""
    try:
        check_crc(path)
        state = torch_load(path, allowed=_NUMPY_ARRAY)
    except CheckpointError as e:
        older = [p for step, p in step_checkpoints(os.path.dirname(path))
                 if os.path.basename(p) != os.path.basename(path) and _step_of(p) < _step_of(path)]
        # The damaged file stays where it is (it may be all there is of a run): resuming an older one in this
        # folder would be refused for it, so the way given is a new folder, or the damaged file moved aside.
        hint = (f"; resume from an older one in a new folder, --resume {older[-1]} --run-name NEW_NAME, or move "
                f"{os.path.basename(path)} out of {os.path.dirname(path)} and --resume {older[-1]}"
                if older and "refused" not in str(e) else "")
        raise CheckpointError(f"{e}{hint}") from None
    check_parts(state, path)
    return state


def check_crc(path: str) -> None:
    """CheckpointError when a stored entry of the checkpoint's zip does not match its CRC-32 (bytes changed
    on disk or in a copy): torch's reader does not check them, and would load the changed tensors."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError):
        return  # not a zip (a legacy torch file, or no checkpoint at all): torch_load says what it is
    except Exception as e:  # a damaged zip directory, a CRC error raised rather than reported
        raise CheckpointError(f"{path}: damaged checkpoint ({first_line(e)})") from None
    if bad is not None:
        raise CheckpointError(f"{path}: damaged checkpoint ({bad} does not match its checksum)")


def _step_of(path: str) -> float:
    m = STEP_FILE.fullmatch(os.path.basename(path))
    return int(m.group(1)) if m else float("inf")


def check_parts(state, path: str) -> None:
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a train_mlm.py checkpoint (it holds a {type(state).__name__}, not the "
                              "dict of a run's state)")
    missing = [k for k in PARTS if k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a train_mlm.py checkpoint (it has no {', '.join(missing)})")
    wrong = [k for k, kind in PARTS.items() if not isinstance(state[k], kind) or isinstance(state[k], bool)]
    if isinstance(state["rng"], list) and (not state["rng"] or not all(isinstance(r, dict) for r in state["rng"])):
        wrong.append("rng")
    if wrong or state["step"] < 0 or not all(isinstance(v, torch.Tensor) for v in state["model"].values()):
        raise CheckpointError(f"{path}: damaged train_mlm.py checkpoint ({', '.join(wrong) or 'model, step'} "
                              "not as train_mlm.py writes them)")


# ----------------------------------------------------------------------------- RNG streams


def rng_state() -> dict:
    """Every random stream of this process, as tensors and plain values."""
    np_state = np.random.get_state(legacy=False)
    return {"python": random.getstate(),
            "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                      "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                      "gauss": float(np_state["gauss"])},
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict, path: str = "checkpoint") -> None:
    """Restore what rng_state() saved, or numpy's own state tuple (what checkpoints of run_v1's format hold)."""
    try:
        random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))
        numpy = state["numpy"]
        if isinstance(numpy, dict):
            numpy = {"bit_generator": "MT19937", "state": {"key": numpy["key"].numpy().astype(np.uint32),
                                                           "pos": numpy["pos"]},
                     "has_gauss": numpy["has_gauss"], "gauss": numpy["gauss"]}
        np.random.set_state(numpy)
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:
        raise CheckpointError(f"{path}: damaged random-number state ({first_line(e)})") from None


# ----------------------------------------------------------------------------- which checkpoints a run keeps


class Checkpointer:
    """A run's checkpoints and the rules for keeping them: step_N.pt at every --save-interval, at the end and
    on a stop signal, of which the last --keep-last (by step) are kept, and best.pt whenever the valid loss
    improves. A resumed run never deletes the checkpoint it started from (`start`): the last good state
    before it stays at hand. `parts` are what a checkpoint holds: objects with a state_dict() (model,
    optimizer, scaler, data stream) and plain values (config, settings, corpus, vocabulary). Saving is a
    collective under DDP (every process's RNG streams are gathered): every rank calls it, the first writes."""

    def __init__(self, folder: str, keep_last: int, write: bool, best_valid: float, parts: dict,
                 start: str | None = None):
        self.folder, self.keep_last, self.write = folder, keep_last, write
        self.best_valid, self.parts = best_valid, parts
        self.start = os.path.abspath(start) if start else None
        if write:
            os.makedirs(folder, exist_ok=True)

    def improves(self, valid_loss: float) -> bool:
        if valid_loss < self.best_valid:
            self.best_valid = valid_loss
            return True
        return False

    def state(self, step: int) -> dict:
        rng = rng_state()
        if dist.is_initialized():  # every rank's dropout stream, so a resumed run continues each one
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, rng)
            rng = gathered
        parts = {k: v.state_dict() if hasattr(v, "state_dict") else v for k, v in self.parts.items()}
        return {**parts, "step": step, "rng": rng, "best_valid_loss": self.best_valid}

    def save(self, name: str, step: int) -> str:
        state = self.state(step)
        path = os.path.join(self.folder, name)
        if self.write:
            save_checkpoint(path, state)
        return path

    def save_step(self, step: int) -> str:
        path = self.save(step_name(step), step)
        if self.write:
            for old_step, old in step_checkpoints(self.folder)[:-self.keep_last]:
                if old_step < step and os.path.abspath(old) != self.start:
                    os.remove(old)
        return path
