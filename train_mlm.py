"""
Pretrain a BERT from scratch with masked language modelling (+ next sentence prediction), and
watch it learn in TensorBoard.

    python train_mlm.py --steps 1000                     # embedded corpus, compact model, CPU is fine
    python train_mlm.py --config small --data my_texts/ --precision bf16 --compile
    torchrun --nproc_per_node 8 train_mlm.py --config base --data corpus/ --seq-len 128 --decay 1 --batch-size 64

Everything a run makes lands in runs/<run-name>/: TensorBoard event files, checkpoints/ (the last
--keep-last, plus best.pt by valid loss), and final/, a Hugging Face layout export that
finetune_cls.py and `transformers` load.

Reading order: train() is the whole algorithm on one page (set-up, then the loop); forward_backward()
is one step's passes; the rest are the small named pieces they call. The training utilities shared
with finetune_cls.py are in training.py, the TensorBoard pictures in visuals.py, the data in data.py.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import signal
import sys
import time
import zipfile
from dataclasses import asdict

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from checkpoints import (Checkpointer, STEP_FILE, checkpoint_parent, find_checkpoint, load_checkpoint, rng_state,
                         run_home, set_rng_state, step_checkpoints)
from cli import ArgumentParser, DataError, HelpFormatter, UsageError, not_positive, run_cli
from data import Prefetcher, PretrainingData, split_ids
from files import RunFolder, check_run_name, remove_stale_temporaries, write_folder, write_json, write_text_atomic
from model import (BertConfig, BertForPreTraining, CheckpointError, PRESETS, activation_bytes_per_sequence,
                   first_line, pretraining_flops_per_sequence)
from token_cache import TOO_FEW_DOCUMENTS, add_corpus_flags, holds_prepared, prepare_pretraining_corpus
from tokenization import vocab_size_problem
from training import (PRECISION_DTYPES, Settings, StopSignal, Timer, agreed_max, autocast_for, check_precision,
                      device_memory, lr_lambda, make_optimizer, measure_peak_flops, seed_everything, setup_device,
                      sync)
from visuals import (custom_scalars_layout, log_embeddings, log_eval, log_gradients, log_probes, log_settings,
                     probe_texts, summary_writer)


# ----------------------------------------------------------------------------- the training loop


def train(s: Settings, resume: Resume | None, run: RunFolder, device: torch.device, rank: int, world: int,
          started: float) -> int:
    # --- processes (started by main(): torchrun sets RANK/WORLD_SIZE; a plain run is rank 0 of 1)
    is_main = rank == 0
    run_dir = s.run_dir  # this run's own folder, claimed by main(): nothing is written outside it
    if resume:
        resume.write_vocab(s.vocab, is_main)
    seed_everything(s.seed)

    # --- data, vocabulary, model, optimizer
    vocab_file, tokenizer, train_corpus, valid_corpus, corpus_info = prepare_data(s, is_local_main())
    config = build_config(s, len(tokenizer))
    model = BertForPreTraining(config).to(device)
    train_data, valid_data = pretraining_streams(s, tokenizer, train_corpus, valid_corpus, rank, world)
    eval_start = valid_data.state_dict()  # every evaluation reads the same valid batches
    most_frequent = most_frequent_token(train_corpus, tokenizer)
    probes = probe_texts(tokenizer, valid_corpus)
    optimizer = make_optimizer(model, s.lr, s.weight_decay, device)
    scaler = torch.amp.GradScaler(device.type, enabled=s.precision == "fp16")
    autocast = autocast_for(device, s.precision)
    step, best_valid = resume.restore(model, optimizer, scaler, train_data, vocab_file, corpus_info, s) if resume \
        else (0, math.inf)
    raw_model, compiled, model = wrap_model(model, s, device)
    if s.steps is None:  # --minutes: the steps that fit, timed here; from now on the run is a --steps run
        s = fit_budget(s, model, raw_model, optimizer, scaler, autocast, train_data, device, started, is_main)
    # last_epoch=step-1: the constructor steps once, to `step`, so a resumed run continues its schedule.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(s.warmup, s.steps, s.decay),
                                                  last_epoch=step - 1)

    # --- what the run writes: TensorBoard, checkpoints, log lines; how it stops
    writer = open_writer(run_dir, s, step, corpus_info, run.created, resume) if is_main else None
    # builds the next batches while the model trains, each masked at its step's rate
    batches = Prefetcher(train_data, s.batch_size, mask_prob=masking_schedule(s, step))
    checkpoints = Checkpointer(os.path.join(run_dir, "checkpoints"), s.keep_last, is_main, best_valid, {
        "model": raw_model, "optimizer": optimizer, "scaler": scaler, "data": batches, "config": asdict(config),
        "args": s.as_dict(), "corpus": corpus_info, "vocab": open(vocab_file, encoding="utf-8").read()},
        start=resume.path if resume else None)
    if is_main:
        print_setup(s, config, raw_model, corpus_info, train_corpus, vocab_file, world, device, run_dir, step,
                    resume.path if resume and run.created else None)
    log = TrainLog(writer, s, step, world, pretraining_flops_per_sequence(config, s.seq_len, s.max_predictions),
                   measure_peak_flops(device, PRECISION_DTYPES[s.precision]))  # the bar, after the set-up lines
    stop = StopSignal(announce=is_main)
    stop.install()
    if resume:  # last, so that nothing in the set-up draws from the restored streams
        set_rng_state(resume.rng(rank), resume.path)
    run.keep()  # from here on the folder holds this run's work, whatever happens
    timer, metrics, exit_code = Timer(), {}, 0
    model.train()
    if is_main and s.viz_interval and step == 0:
        with timer("viz"):
            log_probes(writer, raw_model, tokenizer, 0, device, probes)

    while step < s.steps:
        t0 = time.perf_counter()
        micro = [to_device(batches.next_batch(), device) for _ in range(s.grad_accum)]
        context = s.short_len if step < s.short_context else None  # the first steps read short blocks
        mlm_loss, nsp_loss, mlm_acc = forward_backward(model, micro, scaler, autocast, s.no_nsp, context)
        if not math.isfinite(mlm_loss + nsp_loss):  # exit 3, the last good checkpoints untouched
            exit_code = print_non_finite(mlm_loss + nsp_loss, step + 1, checkpoints.folder, is_main)
            break
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), s.clip).item()
        if is_main and viz_due(s, step + 1):
            with timer("viz"):
                log_gradients(writer, raw_model, step + 1)  # needs the gradients: before zero_grad
        lr = scheduler.get_last_lr()[0]  # the rate this step used
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        sync(device)
        step += 1
        log.step(step, lr, grad_norm, time.perf_counter() - t0, mlm_loss, nsp_loss, mlm_acc)

        if step % s.eval_interval == 0 or step == s.steps:
            with timer("eval"):
                metrics = evaluate(compiled, valid_data, eval_start, s, device, autocast, most_frequent, stop)
                log.remeasure_peak(device, PRECISION_DTYPES[s.precision])
            if is_main and metrics:  # {}: cut short by a stop signal
                log_eval(writer, metrics, step)
            log.evaluation(step, metrics)
            if checkpoints.improves(metrics.get("loss", math.inf)):
                checkpoints.save("best.pt", step)
        if is_main and viz_due(s, step):
            with timer("viz"):
                log_probes(writer, raw_model, tokenizer, step, device, probes)

        signum = stop.agreed(device)  # Ctrl-C or SIGTERM on any process: save, then exit 128 + signal
        if step % s.save_interval == 0 or step == s.steps or signum:
            path = checkpoints.save_step(step)
        if signum:
            log.close()  # the bar first, so that the last lines on a terminal say what to do
            if is_main:
                print_stopped(signum, step, path, run_dir)
            exit_code = 128 + signum
            break

    batches.close()
    log.close()
    stop.restore()
    if step == s.steps and exit_code == 0 and not metrics:  # resumed at its last step, killed before its export
        metrics = evaluate(compiled, valid_data, eval_start, s, device, autocast, most_frequent)
    if is_main and step == s.steps and exit_code == 0:
        finish_run(s, writer, raw_model, tokenizer, vocab_file, config, metrics, run_dir, world, timer,
                   log.t_start, started)
    if writer:
        writer.close()
    if dist.is_initialized():
        dist.destroy_process_group()
    return exit_code


def forward_backward(model, micro: list[dict], scaler, autocast, no_nsp: bool, context: int | None = None
                     ) -> tuple[float, float, float]:
    """One optimizer step's forward and backward passes over its micro-batches (and, under DDP, over every
    process's), weighted so that the gradient is that of one big batch: the MLM loss is the mean over every
    masked token of the global batch, however it is split into micro-batches and processes; the NSP loss the
    mean over its sequences. context=n: the encoder reads blocks of n tokens (--short-context). Returns the
    step's (MLM loss, NSP loss, MLM accuracy), equal on every process."""
    distributed = dist.is_initialized()
    world = dist.get_world_size() if distributed else 1
    device = micro[0]["input_ids"].device
    n_masked = torch.stack([b["masked_lm_weights"].sum() for b in micro])
    total = n_masked.sum().clone()
    if distributed:
        dist.all_reduce(total)
    stats = torch.zeros(3, device=device)  # MLM loss, NSP loss, MLM accuracy
    for i, batch in enumerate(micro):
        last = i == len(micro) - 1  # DDP all-reduces the gradients once, in the last backward
        with (contextlib.nullcontext() if last or not distributed else model.no_sync()), autocast:
            out = model(**model_inputs(batch, no_nsp), context=context)
        mlm = out.mlm_loss * (n_masked[i] / total).item()  # this part's share of the masked tokens
        nsp = out.nsp_loss / (len(micro) * world) if out.nsp_loss is not None else torch.zeros((), device=device)
        # DDP averages gradients over ranks; scaling by world turns that average into the global sum.
        scaler.scale((mlm + nsp) * world).backward()
        hits = ((out.mlm_logits.argmax(-1) == batch["masked_lm_ids"]).float() * batch["masked_lm_weights"]).sum()
        stats += torch.stack([mlm.detach(), nsp.detach(), hits / total.float()])
    if distributed:
        dist.all_reduce(stats)
    mlm_loss, nsp_loss, mlm_acc = stats.tolist()
    return mlm_loss, nsp_loss, mlm_acc


# ----------------------------------------------------------------------------- the pieces the loop calls


class TrainLog:
    """Train scalars every --log-interval steps, averaged over the steps since the last: to TensorBoard,
    and to the terminal as a progress bar, or as a plain line (step, loss, lr, tokens/s, ETA) when the
    output goes to a file, as on a cluster; each evaluation as a line too. Only the first process logs
    (writer None elsewhere). The ETA comes from a smoothed step time: on a shared machine one window's
    time can be three times the next's, and an ETA that jumps with it is no ETA at all."""

    SMOOTHING = 0.9  # of the step time, per logged window (an average with bias correction, as Adam's)

    def __init__(self, writer, s: Settings, step: int, world: int, flops_per_sequence: float, peak_flops: float):
        self.writer, self.s, self.peak = writer, s, peak_flops
        self.tokens_per_step = s.batch_size * s.grad_accum * world * s.seq_len
        self.flops_per_step = flops_per_sequence * s.batch_size * s.grad_accum
        self.window = self._empty()
        self.t_start = time.perf_counter()
        self.step_time, self.windows = 0.0, 0  # the smoothed step time, and the windows in it
        self.progress = None
        if writer is not None and not s.no_progress and sys.stderr.isatty():
            from tqdm import tqdm
            self.progress = tqdm(total=s.steps, initial=step, dynamic_ncols=True, desc="train")

    @staticmethod
    def _empty() -> dict:
        return {"loss": 0.0, "mlm": 0.0, "nsp": 0.0, "acc": 0.0, "time": 0.0, "n": 0}

    def remeasure_peak(self, device: torch.device, dtype: torch.dtype) -> None:
        # At every eval, keeping the best: one measurement on a busy machine is low.
        self.peak = max(self.peak, measure_peak_flops(device, dtype))

    def step(self, step: int, lr: float, grad_norm: float, seconds: float, mlm: float, nsp: float, acc: float):
        for k, v in (("loss", mlm + nsp), ("mlm", mlm), ("nsp", nsp), ("acc", acc), ("time", seconds), ("n", 1)):
            self.window[k] += v
        if self.writer is None:
            return
        if step % self.s.log_interval == 0:
            self._write(step, lr, grad_norm)
        if self.progress:
            self.progress.update(1)

    def _write(self, step: int, lr: float, grad_norm: float) -> None:
        w, n = self.window, self.window["n"]
        step_time = w["time"] / n
        scalars = {"Loss/train": w["loss"] / n, "Loss/train_mlm": w["mlm"] / n, "Accuracy/train_mlm": w["acc"] / n,
                   "Optim/lr": lr, "Optim/grad_norm": grad_norm, "Perf/tokens_per_sec": self.tokens_per_step / step_time,
                   "Perf/mfu": self.flops_per_step / step_time / self.peak, "Perf/step_time": step_time}
        if not self.s.no_nsp:
            scalars["Loss/train_nsp"] = w["nsp"] / n
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)
        if self.progress:
            self.progress.set_postfix(loss=f"{scalars['Loss/train']:.3f}", lr=f"{lr:.2e}",
                                      tok_s=f"{scalars['Perf/tokens_per_sec']:,.0f}", refresh=False)
        else:
            self.windows += 1
            self.step_time = self.SMOOTHING * self.step_time + (1 - self.SMOOTHING) * step_time
            eta = int((self.s.steps - step) * self.step_time / (1 - self.SMOOTHING ** self.windows))
            print(f"step {step}/{self.s.steps}: loss {scalars['Loss/train']:.4f}, lr {lr:.2e}, "
                  f"{scalars['Perf/tokens_per_sec']:,.0f} tok/s, mfu {scalars['Perf/mfu']:.1%}, "
                  f"ETA {clock(eta)}", flush=True)
        self.window = self._empty()

    def evaluation(self, step: int, m: dict) -> None:
        """The valid metrics of an evaluation, as a line (above the bar on a terminal)."""
        if self.writer is None or not m:
            return
        line = (f"eval at step {step}: valid loss {m['loss']:.4f}"
                + (f" (MLM {m['mlm_loss']:.4f} + NSP {m['nsp_loss']:.4f})" if "nsp_loss" in m else "")
                + f", MLM accuracy {m['mlm_acc']:.2%} (unigram baseline {m['unigram_acc']:.2%})"
                + (f", NSP accuracy {m['nsp_acc']:.1%}" if "nsp_acc" in m else ""))
        if self.progress:
            self.progress.write(line)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.progress:
            self.progress.close()


def viz_due(s: Settings, step: int) -> bool:
    return bool(s.viz_interval) and step % s.viz_interval == 0


@torch.no_grad()
def evaluate(model, data: PretrainingData, start: dict, s: Settings, device, autocast, most_frequent: int,
             stop: StopSignal | None = None) -> dict:
    """Valid metrics over a fixed set of batches: the data restarts from `start` every time. In one process,
    a stop signal cuts it short ({}: the step is saved at once, not after a long evaluation)."""
    model.eval()
    data.load_state_dict(start)
    sums = torch.zeros(8, dtype=torch.float64)  # on the CPU: MPS has no float64
    for _ in range(s.eval_batches):
        if stop and stop.signum and not dist.is_initialized():  # under DDP every rank must finish alike
            model.train()
            return {}
        batch = to_device(data.next_batch(s.batch_size), device)
        with autocast:
            out = model(**model_inputs(batch, s.no_nsp))
        w = batch["masked_lm_weights"]
        ce = F.cross_entropy(out.mlm_logits.flatten(0, 1).float(), batch["masked_lm_ids"].flatten(), reduction="none")
        correct = (out.mlm_logits.argmax(-1) == batch["masked_lm_ids"]).float()
        nsp_ok = (out.nsp_logits.argmax(-1) == batch["next_sentence_labels"]).float()
        nsp_ce = F.cross_entropy(out.nsp_logits.float(), batch["next_sentence_labels"], reduction="sum")
        baseline = (batch["masked_lm_ids"] == most_frequent).float()
        sums += torch.tensor([(ce * w.flatten()).sum().item(), (correct * w).sum().item(), w.sum().item(),
                              nsp_ce.item(), nsp_ok.sum().item(), len(nsp_ok), (baseline * w).sum().item(), 0])
    if dist.is_initialized():
        dist.all_reduce(sums)
    mlm_loss, mlm_acc, n_masked, nsp_loss, nsp_acc, n_seq, base_acc, _ = sums.tolist()
    model.train()
    metrics = {"mlm_loss": mlm_loss / n_masked, "mlm_acc": mlm_acc / n_masked,
               "unigram_acc": base_acc / n_masked}
    metrics["perplexity"] = math.exp(min(metrics["mlm_loss"], 50))
    if not s.no_nsp:
        metrics.update(nsp_loss=nsp_loss / n_seq, nsp_acc=nsp_acc / n_seq)
    metrics["loss"] = metrics["mlm_loss"] + metrics.get("nsp_loss", 0.0)
    return metrics


def masking_schedule(s: Settings, step: int):
    """--mask-prob-end: the rate of the k-th batch made from `step` on (grad_accum batches a step), falling
    linearly from --mask-prob at the first step to --mask-prob-end at the last. None: a constant rate."""
    if s.mask_prob_end is None:
        return None

    def rate(k: int) -> float:
        done = min(1.0, (step + k // s.grad_accum) / max(1, s.steps - 1))  # batch k is for step step + k // accum
        return s.mask_prob + (s.mask_prob_end - s.mask_prob) * done
    return rate


def model_inputs(batch: dict, no_nsp: bool) -> dict:
    keys = ["input_ids", "token_type_ids", "attention_mask", "masked_lm_positions", "masked_lm_ids",
            "masked_lm_weights"] + ([] if no_nsp else ["next_sentence_labels"])
    return {k: batch[k] for k in keys}


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def print_non_finite(loss: float, step: int, folder: str, is_main: bool) -> int:
    if is_main:
        print(f"\nerror: loss is {loss} at step {step}; stopping without saving (the last good checkpoint is "
              f"kept in {folder}). Try a lower --lr or --precision fp32.", file=sys.stderr)
    return 3


def print_stopped(signum: int, step: int, path: str, run_dir: str) -> None:
    """The stop, and the command that continues it: the run's folder, whose newest checkpoint is the one this
    run wrote last (the folder form stays right after later stops; a checkpoint's name would not)."""
    print(f"\n{signal.Signals(signum).name}: stopped at step {step}; checkpoint saved to {shown(path)}\n"
          f"resume with: python {os.path.relpath(__file__)} --resume {shown(run_dir)}", file=sys.stderr)


def shown(path: str) -> str:
    """A path as a user reads it: relative to here when it is below here."""
    relative = os.path.relpath(path)
    return relative if not relative.startswith("..") else path


# ----------------------------------------------------------------------------- set-up


def start_processes(device_name: str) -> tuple[torch.device, int, int]:
    """(device, rank, world size). torchrun sets RANK and WORLD_SIZE; a plain run is rank 0 of 1."""
    distributed = "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", 1)) > 1
    device = setup_device(device_name)
    if not distributed:
        return device, 0, 1
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device, dist.get_rank(), dist.get_world_size()


def is_local_main() -> bool:
    """The first process of this machine: it prepares the caches the others then open."""
    return int(os.environ.get("LOCAL_RANK", 0)) == 0


EXPORT_FILES = ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json")  # final/, whole
_CONFIG_FLAGS = {"hidden_size": "--hidden", "intermediate_size": "--hidden", "num_hidden_layers": "--layers",
                 "num_attention_heads": "--heads", "max_position_embeddings": "--seq-len", "vocab_size": "--vocab-size"}


def build_config(s, vocab_size: int) -> BertConfig:
    try:
        config = BertConfig.from_preset(s.config, vocab_size=vocab_size, hidden_dropout_prob=s.dropout,
                                        attention_probs_dropout_prob=s.dropout,
                                        max_position_embeddings=max(512, s.seq_len))
        if s.layers is not None:
            config.num_hidden_layers = s.layers
        if s.hidden is not None:
            config.hidden_size, config.intermediate_size = s.hidden, 4 * s.hidden
        if s.heads is not None:
            config.num_attention_heads = s.heads
        return BertConfig(**asdict(config))  # re-validate the overridden sizes
    except ValueError as e:
        flag = next((f for field, f in _CONFIG_FLAGS.items() if str(e).startswith(field)), "--hidden/--heads")
        raise UsageError(f"{flag}: {e}") from None


def check_memory(s: Settings, vocab_size: int) -> None:
    """The model's training state (weights, gradients, Adam's moments: 16 bytes a parameter) and a lower bound
    of one micro-batch's activations, against the memory of the device: a typo in --hidden, --layers or
    --batch-size is one line before anything is read or written, not an allocation failure minutes later."""
    config = build_config(s, vocab_size)
    device = setup_device(s.device)
    available = device_memory(device)
    try:
        config.check_memory(16, available)
    except ValueError as e:
        raise UsageError(f"--config/--layers/--hidden: {e}") from None
    need = config.num_parameters() * 16 + s.batch_size * activation_bytes_per_sequence(config, s.seq_len)
    if available and need > available:
        raise UsageError(f"--batch-size {s.batch_size} x --seq-len {s.seq_len}: a step of this model needs at least "
                         f"{need / 2**30:,.1f} GiB, more than the {available / 2**30:,.1f} GiB of {device}; use a "
                         "smaller --batch-size (and --grad-accum for the same batch)")


def prepare_data(s, is_main: bool) -> tuple:
    """Corpus -> (vocab file, tokenizer, train corpus, valid corpus, corpus info). Under torchrun the
    first process of each machine (LOCAL_RANK 0) prepares the caches (vocabulary, token ids) while the
    others wait, then they only open them: every rank reads the same files, none holds the corpus.
    is_main: this process prepares (and reports progress)."""
    if not is_main:
        dist.barrier()
    vocab_file, tokenizer, corpus, info = prepare_pretraining_corpus(
        s.data, s.cache_dir, s.vocab, s.vocab_size, not s.cased, s.vocab_sample, s.text_field,
        s.workers, progress=is_main, min_documents=2)
    n = corpus.num_documents()
    if n < 2:  # prepared before, by prepare_data.py
        raise DataError(f"{' '.join(s.data or ['default corpus'])}: too few documents ({n}) for a train/valid "
                        f"split: {TOO_FEW_DOCUMENTS}")
    train_ids, valid_ids = split_ids(n, s.valid_fraction, s.seed)
    if is_main and len(valid_ids) > 2 * s.valid_fraction * n:  # one document is already too large a share
        print(f"note: {len(valid_ids)} of the corpus's {n} documents ({len(valid_ids) / n:.0%}) are held out for "
              f"validation, not {s.valid_fraction:.0%} (--valid-fraction): too few documents to split finer; "
              "give more text, or separate documents with blank lines", file=sys.stderr)
    meta = corpus.info
    info = dict(info, documents=meta["documents"], sentences=meta["sentences"], words=meta["words"],
                tokens=meta["tokens"], cache=corpus.folder)
    if is_main and dist.is_initialized():
        dist.barrier()
    return vocab_file, tokenizer, corpus.subset(train_ids), corpus.subset(valid_ids), info


def pretraining_streams(s: Settings, tokenizer, train_corpus, valid_corpus, rank: int, world: int) -> tuple:
    """The train and valid instance streams: BERT's NSP pairs and masking, this process's share."""
    kw = dict(max_seq_length=s.seq_len, max_predictions_per_seq=s.max_predictions, masked_lm_prob=s.mask_prob,
              short_seq_prob=s.short_seq_prob, next_sentence=not s.no_nsp, whole_word_masking=s.whole_word_masking,
              rank=rank, world_size=world, shuffle_buffer=s.shuffle_buffer)
    return (PretrainingData(train_corpus, tokenizer, seed=s.seed, **kw),
            PretrainingData(valid_corpus, tokenizer, seed=s.seed + 1, **kw))


def most_frequent_token(corpus, tokenizer) -> int:
    """The unigram baseline's guess: the commonest non-special token of the corpus (counted when it was
    prepared: the token ids are not read again)."""
    counts = corpus.token_counts.copy() if corpus.token_counts is not None else \
        np.bincount(np.asarray(corpus.tokens), minlength=len(tokenizer))
    counts[[tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.cls_token_id,
            tokenizer.sep_token_id, tokenizer.mask_token_id]] = 0
    return int(counts.argmax())


def wrap_model(model, s: Settings, device: torch.device) -> tuple:
    """(the model itself, for saving and visualising; compiled, for evaluation; the one to train: under
    torchrun, wrapped in DDP)."""
    compiled = torch.compile(model) if s.compile else model
    if not dist.is_initialized():
        return model, compiled, compiled
    # Without NSP the pooler and NSP head get no gradient: DDP must be told.
    ddp = torch.nn.parallel.DistributedDataParallel(
        compiled, device_ids=[device] if device.type == "cuda" else None, find_unused_parameters=s.no_nsp)
    return model, compiled, ddp


BUDGET_TIMING = 0.03  # share of a --minutes budget spent timing the step (from 2 to 30 steps)
EXPORT_RATE = 200e6  # bytes/s at which the end of a run writes its export (safetensors, then the projector)


def fit_budget(s: Settings, model, raw_model, optimizer, scaler, autocast, data: PretrainingData,
               device: torch.device, started: float, is_main: bool) -> Settings:
    """--minutes M: time training steps on the run's own batches, put the model, optimizer, scaler, data
    position and random streams back as they were, and resolve the steps that fit what is left of the budget
    after the set-up so far, the evaluations and the export. The run is then exactly the --steps run of that
    count (a test compares them), so it resumes like one; the count and the step time are saved with it."""
    before = copy.deepcopy({"model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                            "scaler": scaler.state_dict()})
    position, streams = data.state_dict(), rng_state()
    if is_main:
        print(f"timing the step for --minutes {s.minutes:g} ...", flush=True)
    batches = Prefetcher(data, s.batch_size)
    try:
        time_steps(model, batches, optimizer, scaler, autocast, s, device, 1)  # allocation, threads, compilation
        first = agreed_max(time_steps(model, batches, optimizer, scaler, autocast, s, device, 1), device)
        timed = int(min(max(2, BUDGET_TIMING * 60 * s.minutes / first), 30))
        step_time = agreed_max(time_steps(model, batches, optimizer, scaler, autocast, s, device, timed), device)
    finally:
        batches.close()
    raw_model.load_state_dict(before["model"])
    optimizer.load_state_dict(before["optimizer"])
    scaler.load_state_dict(before["scaler"])
    data.load_state_dict(position)
    set_rng_state(streams)
    per_step = step_time * (1 + s.eval_batches / (3 * s.eval_interval))  # an eval batch: a forward, 1/3 of a step
    export = 0.5 + 4 * sum(p.numel() for p in raw_model.parameters()) / EXPORT_RATE  # fp32 weights, and the rest
    left = 60 * s.minutes - (time.perf_counter() - started) - export - per_step * s.eval_batches / 3
    steps = int(agreed_max(left / per_step if is_main else -math.inf, device))  # rank 0's count, on every rank
    if steps < 1:
        raise UsageError(f"--minutes {s.minutes:g}: the set-up took {time.perf_counter() - started:.0f}s and a step "
                         f"{step_time:.2f}s, so no step fits; give more minutes")
    values = s.as_dict()
    values.update(steps=steps, timed_step=step_time, **fractions_as_steps(values, steps))
    if is_main:
        print(f"steps: {steps:,} fit --minutes {s.minutes:g} ({step_time:.3f}s a step over {timed} timed steps, "
              f"{time.perf_counter() - started:.0f}s of set-up, evaluations and export counted)", flush=True)
    return Settings(**values)


def time_steps(model, batches: Prefetcher, optimizer, scaler, autocast, s: Settings, device, n: int) -> float:
    """Seconds per optimizer step over `n` steps taken as the loop takes them."""
    t0 = time.perf_counter()
    for _ in range(n):
        micro = [to_device(batches.next_batch(), device) for _ in range(s.grad_accum)]
        forward_backward(model, micro, scaler, autocast, s.no_nsp)
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), s.clip).item()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
    sync(device)
    return (time.perf_counter() - t0) / n


def clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def open_writer(run_dir: str, s: Settings, step: int, corpus_info: dict, fresh: bool, resume: Resume | None):
    """The run's TensorBoard writer; a new folder also records the settings and corpus (and, for a branch,
    the checkpoint it continues)."""
    # purge_step drops events a crashed run wrote after its last checkpoint.
    writer = summary_writer(run_dir, purge_step=step + 1 if step and not fresh else None)
    if fresh:
        writer.add_custom_scalars(custom_scalars_layout())
        log_settings(writer, s.as_dict())
        writer.add_text("Run/corpus", "    " + json.dumps(corpus_info, indent=1).replace("\n", "\n    "), step)
        if resume:
            writer.add_text("Run/branched_from", f"{resume.path} (step {step})", step)
        write_json(os.path.join(run_dir, "corpus.json"), corpus_info)
    return writer


def print_setup(s: Settings, config, model, corpus_info: dict, train_corpus, vocab_file: str, world: int,
                device, run_dir: str, step: int, branched_from: str | None) -> None:
    n_params = sum(p.numel() for p in model.parameters())
    sequences = s.batch_size * s.grad_accum * world
    print(f"model: {s.config} ({config.num_hidden_layers} layers, hidden {config.hidden_size}, "
          f"{config.num_attention_heads} heads), {n_params / 1e6:.2f}M parameters, vocab {config.vocab_size}")
    print(f"data: {corpus_info['documents']:,} documents, {corpus_info['sentences']:,} sentences, "
          f"{corpus_info['tokens']:,} tokens ({train_corpus.num_tokens():,} train); vocab {vocab_file}")
    print(f"batch: {s.batch_size} x {s.grad_accum} accum x {world} processes = {sequences} sequences "
          f"({sequences * s.seq_len:,} tokens) per step; device {device}, {s.precision}"
          + (", compiled" if s.compile else ""))
    if s.mask_prob_end is not None:
        print(f"masking: {s.mask_prob:.0%} of the tokens at the first step, falling linearly to {s.mask_prob_end:.0%} "
              f"at the last")
    if s.short_context:
        print(f"short context: steps 1-{min(s.short_context, s.steps):,} read blocks of {s.short_len} tokens, "
              f"the rest whole sequences of {s.seq_len}")
    print(f"logs: {shown(run_dir)}" + (f" (branched from {branched_from} at step {step})" if branched_from
                                else f" (resuming at step {step})" if step else ""))


def finish_run(s: Settings, writer, model, tokenizer, vocab_file: str, config, metrics: dict, run_dir: str,
               world: int, timer: Timer, t_start: float, started: float) -> None:
    """The end of a completed run: the Hugging Face export, the hparams table, the embedding projector
    and the summary."""
    export_dir = os.path.join(run_dir, "final")
    settings = {"do_lower_case": not s.cased, "tokenizer_class": "BertTokenizer", "model_max_length": s.seq_len}

    def export(folder: str) -> None:
        model.save_pretrained(folder, vocab_file=vocab_file)
        write_json(os.path.join(folder, "tokenizer_config.json"), settings)
    write_folder(export_dir, export)  # whole or absent: finetune_cls.py may pick it up at any moment
    writer.add_hparams({"config": s.config, "lr": s.lr, "batch": s.batch_size * s.grad_accum * world,
                        "seq_len": s.seq_len, "steps": s.steps, "minutes": s.minutes or 0, "warmup": s.warmup,
                        "decay": s.decay, "short_context": s.short_context, "short_len": s.short_len,
                        "mask_prob": s.mask_prob, "mask_prob_end": s.mask_prob if s.mask_prob_end is None
                        else s.mask_prob_end,
                        "vocab_size": config.vocab_size, "nsp": not s.no_nsp, "wwm": s.whole_word_masking,
                        "precision": s.precision},
                       {f"hparam/{k}": v for k, v in metrics.items()}, name="hparams")
    with timer("viz"):
        log_embeddings(writer, model, tokenizer, s.steps)
    print_summary(metrics, run_dir, export_dir, s, timer.seconds, time.perf_counter() - t_start, started)


def print_summary(m: dict, run_dir: str, export_dir: str, s: Settings, seconds: dict, total: float,
                  started: float) -> None:
    print("\n" + "-" * 64)
    print(f"{total:.0f}s: {total - seconds['eval'] - seconds['viz']:.0f}s training, {seconds['eval']:.0f}s "
          f"evaluation, {seconds['viz']:.1f}s TensorBoard visualisation ({seconds['viz'] / total:.1%})")
    if s.minutes and getattr(s, "timed_step", None):  # a budget run's first process (a resumed one has no budget)
        took = time.perf_counter() - started
        print(f"time budget: {clock(60 * s.minutes)} (--minutes {s.minutes:g}), took {clock(took)} "
              f"({took / (60 * s.minutes) - 1:+.0%}), {s.steps:,} steps")
    print(f"valid MLM loss {m['mlm_loss']:.4f} (perplexity {m['perplexity']:.1f}), "
          f"MLM accuracy {m['mlm_acc']:.2%} vs {m['unigram_acc']:.2%} for the unigram baseline "
          "(always the most frequent token)")
    if "nsp_acc" in m:
        print(f"valid NSP accuracy {m['nsp_acc']:.2%} (chance: 50%)")
    print(f"checkpoints: {os.path.join(run_dir, 'checkpoints')}")
    print(f"model (Hugging Face layout): {export_dir}")
    print(f"view the logs: tensorboard --logdir {s.out_dir}")
    print(f"next, fine-tune it: python finetune_cls.py --init {export_dir}   (add --compare to see what pretraining "
          "gave over a scratch baseline)")


# ----------------------------------------------------------------------------- settings and resume


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    # Which flags were given, not defaulted: a resumed run takes the rest from its checkpoint.
    given = build_parser()
    for action in given._actions:
        action.default = argparse.SUPPRESS
    args.given = set(vars(given.parse_args(argv)))
    if args.max_predictions is None:  # room for the highest rate of a falling one
        args.max_predictions = math.ceil(max(args.mask_prob, args.mask_prob_end or 0) * args.seq_len)
    if args.minutes is not None:
        if "steps" in args.given or args.resume:
            p.error("--minutes chooses the step count of a new run: give it or --steps, not both (a resumed run "
                    "keeps the steps its budget chose; give --steps to train further)")
        args.steps = None  # resolved when the step can be timed: fit_budget()
    problem = settings_problem(vars(args))
    if args.run_name is not None:
        try:
            check_run_name(args.run_name)
        except UsageError as e:
            problem = problem or str(e)
    if problem:
        p.error(problem)
    return args


MAX_SEQ_LEN = 1 << 16  # tokens per sequence: BERT's are 512 long; attention's memory grows with the square
_POSITIVE = ("steps", "batch_size", "grad_accum", "seq_len", "max_predictions", "log_interval", "eval_interval",
             "eval_batches", "save_interval", "keep_last", "vocab_size", "workers", "vocab_sample", "shuffle_buffer",
             "short_len")


def settings_problem(v: dict) -> str | None:
    """What is wrong with a run's settings, as the flag would say it (None: nothing). The flags are checked
    with it, and so are the settings a resumed checkpoint brings."""
    for action in build_parser()._actions:  # types first: a checkpoint's settings may be anything
        value, flag = v.get(action.dest), (action.option_strings or [action.dest])[-1]
        if value is None or action.dest == "help":
            continue
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            ok, kind = isinstance(value, bool), "true or false"
        elif action.nargs == "+":
            ok = isinstance(value, list) and len(value) > 0 and all(isinstance(x, str) for x in value)
            kind = "one or more paths"
        elif action.type in (int, float):
            ok = isinstance(value, int if action.type is int else (int, float)) and not isinstance(value, bool) \
                and math.isfinite(value)
            kind = "a whole number" if action.type is int else "a finite number"
        else:
            ok, kind = isinstance(value, str), "text"
        if not ok:
            return f"{flag} must be {kind}, got {value!r}"
        if action.choices and value not in action.choices:
            return f"{flag} must be one of {', '.join(action.choices)}, got {value!r}"
    for name in ("dropout", "mask_prob", "short_seq_prob", "mask_prob_end"):  # shares, in [0, 1)
        value = v.get(name)  # None: --mask-prob-end not given
        if value is not None and (not 0 <= value < 1 or (name.startswith("mask_prob") and value == 0)):
            return f"--{name.replace('_', '-')} must be in [0, 1), got {value}"
    if v.get("minutes") is not None and not_positive(v, ["minutes"]):
        return not_positive(v, ["minutes"])
    if v["steps"] is None and v.get("minutes") is None:
        return "--steps must be a whole number, got None"
    problem = not_positive(v, [n for n in _POSITIVE if n != "steps" or v["steps"] is not None])
    if problem:
        return problem
    if not 0 < v["valid_fraction"] < 1:
        return f"--valid-fraction must be between 0 and 1, got {v['valid_fraction']}"
    if vocab_size_problem(v["vocab_size"], not v["cased"]):
        return vocab_size_problem(v["vocab_size"], not v["cased"])
    if v["viz_interval"] < 0 or v["lr"] <= 0 or v["warmup"] < 0 or v["short_context"] < 0:
        return "--viz-interval, --lr, --warmup and --short-context must not be negative (and --lr not zero)"
    if not 0 < v["decay"] <= 1:
        return f"--decay must be in (0, 1], got {v['decay']}"
    if v["clip"] <= 0 or v["weight_decay"] < 0:
        return f"--clip must be positive and --weight-decay not negative, got {v['clip']} and {v['weight_decay']}"
    if not 0 <= v["seed"] < 2 ** 32:
        return f"--seed must be in [0, 2^32), got {v['seed']}"
    if not 8 <= v["seq_len"] <= MAX_SEQ_LEN or v["max_predictions"] > v["seq_len"]:
        return (f"--seq-len must be in [8, {MAX_SEQ_LEN:,}] and --max-predictions at most --seq-len, got "
                f"{v['seq_len']} and {v['max_predictions']}")
    return None


def resolve_settings(args: argparse.Namespace, resume: Resume | None, run_dir: str | None = None) -> Settings:
    """The flags (and, on resume, the run's own settings) resolved once: the run's folder (run_dir, once
    main() has claimed it), the vocabulary of a resumed run, and the warmup as a number of steps, so that
    more --steps later do not stretch it."""
    values = {k: v for k, v in vars(args).items() if k != "given"}
    if resume:
        values = resume.settings(values, args.given)
    if run_dir is None:
        home = resume.continues_in(values["out_dir"], values["run_name"]) if resume else None
        run_dir = home or os.path.join(values["out_dir"], values["run_name"] or default_run_name(values["config"]))
    values.update(run_dir=run_dir, out_dir=os.path.dirname(run_dir), run_name=os.path.basename(run_dir))
    if resume and "vocab" not in args.given:  # the vocabulary the run was trained with, from its checkpoint
        values["vocab"] = os.path.join(run_dir, "vocab.txt")
    if values["steps"] is not None:  # else --minutes: fit_budget() resolves both once the step is timed
        values.update(fractions_as_steps(values, values["steps"]))
    return Settings(**values)


def fractions_as_steps(values: dict, steps: int) -> dict:
    """--warmup and --short-context as numbers of steps (each a fraction of `steps` if below 1), resolved once, so
    that more --steps on resume do not stretch them."""
    return {k: int(values[k] * steps) if values[k] < 1 else int(values[k]) for k in ("warmup", "short_context")}


def default_run_name(config: str) -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + config


def claim_run_folder(s: Settings, resume: Resume | None, numbered: bool, rank: int) -> RunFolder:
    """The run's folder, held for the run: a new run (or a branch of a resumed one) creates its own, which
    must not exist; a resumed run reopens the folder of its checkpoint (never the one its settings name).
    Under torchrun the first process claims it and tells the others which it is."""
    if not dist.is_initialized():
        return _claim(s, resume, numbered)
    claimed: list = [None]
    if rank == 0:
        try:
            run = _claim(s, resume, numbered)
            claimed[0] = run.path
        except UsageError as e:
            claimed[0] = e
    dist.broadcast_object_list(claimed, src=0)
    if isinstance(claimed[0], UsageError):
        if rank == 0:
            raise claimed[0]
        raise SystemExit(2)  # the first process says why
    return run if rank == 0 else RunFolder(claimed[0], created=False)


def _claim(s: Settings, resume: Resume | None, numbered: bool) -> RunFolder:
    if resume and resume.continues_in(s.out_dir, s.run_name):
        for name in ("checkpoints", "final"):  # a copy of a run must not share its checkpoints with the original
            if os.path.islink(os.path.join(s.run_dir, name)):
                link = os.path.join(s.run_dir, name)
                raise UsageError(f"{link} is a link to {os.path.realpath(link)}: a run writes its {name} in its own "
                                 "folder. Copy them in (cp -rL), or link the whole run folder instead")
        run = RunFolder.open(s.run_dir)
        try:
            resume.check_line()  # under the lock: no other process adds checkpoints meanwhile
        except BaseException:
            run.release()
            raise
        for folder in (s.run_dir, os.path.join(s.run_dir, "checkpoints")):
            for path in remove_stale_temporaries(folder):  # a killed process's half-written files
                print(f"removed {path}, left half-written by a process that was killed", file=sys.stderr)
        return run
    return RunFolder.create(s.out_dir, s.run_name, numbered)


class Resume:
    """Everything --resume means, in one place: the run's own settings, except the flags given now (more
    --steps, another --device, a new --lr) and its paths (a checkpoint says what was trained, never where
    to write: the folder is the one the checkpoint is in, or a new one); the vocabulary it was trained with;
    its model, optimizer, scaler, data position, step, best valid loss and every process's RNG streams."""

    # Paths are not taken from a checkpoint: a copied folder, or someone else's file, must not write where
    # its settings point. --data is read, not written: it is kept (and shown). The cache folder is kept only
    # where it already holds this run's prepared corpus (see cache_dir()).
    NOT_FROM_CHECKPOINT = ("out_dir", "run_name", "run_dir", "cache_dir", "vocab", "resume")

    def __init__(self, path: str):
        self.path = find_checkpoint(path)
        self.state = load_checkpoint(self.path)
        self.step = self.state["step"]
        self.home = run_home(self.path)  # the run folder it is in; None for a loose file
        self.parent = checkpoint_parent(self.path)  # the folder above its checkpoints/, run folder or not

    def settings(self, flags: dict, given: set[str]) -> dict:
        saved = {k: v for k, v in self.state["args"].items() if k in flags and k not in self.NOT_FROM_CHECKPOINT}
        saved.setdefault("decay", 1.0)  # a checkpoint without the setting decays as BERT does
        values = {**flags, **saved, **{k: flags[k] for k in given}}
        problem = settings_problem(values)
        if problem:
            raise CheckpointError(f"{self.path}: its settings are not valid ({problem})")
        if "cache_dir" not in given:
            values["cache_dir"] = self.cache_dir(values) or flags["cache_dir"]
        self.vocab_from_checkpoint = "vocab" not in given
        return values

    def cache_dir(self, values: dict) -> str | None:
        """The checkpoint's --cache-dir, if it holds this run's corpus prepared with its vocabulary already: the
        resumed run only reads it there, and writes nothing (a hostile checkpoint cannot make a cache appear in
        a folder of its choosing). None: the flag's (or default) cache folder."""
        cache = self.state["args"].get("cache_dir")
        if isinstance(cache, str) and \
                holds_prepared(cache, values["data"], self.state["vocab"], not values["cased"], values["text_field"]):
            return cache
        return None

    def continues_in(self, out_dir: str, run_name: str | None) -> str | None:
        """The run folder this resume continues in: the checkpoint's own run folder, unless --run-name names
        another (a branch, into a new folder); or the folder above its checkpoints/ when --out-dir and
        --run-name name that folder. None: a new folder."""
        if run_name is not None:
            named = os.path.realpath(os.path.join(out_dir, run_name))
            return self.parent if self.parent and named == os.path.realpath(self.parent) else None
        return self.home

    def check_line(self) -> None:
        """Continuing in the checkpoint's own folder must not mix two lines of training: refused from a file
        that is not the run's newest step checkpoint, with the way to branch instead."""
        branch = f"--resume {self.path} --run-name NEW_NAME"
        if not STEP_FILE.fullmatch(os.path.basename(self.path)):
            raise UsageError(f"--resume {self.path}: a run continues in its folder from its newest step_N.pt "
                             f"(--resume {shown(self.home)}); to train on from this one, branch into a new run "
                             f"folder: {branch}")
        # A later file cut short (a full disk, a copy) is no line to keep: the resumed run writes it anew.
        later = [os.path.basename(p) for step, p in step_checkpoints(os.path.dirname(self.path))
                 if step > self.step and zipfile.is_zipfile(p)]
        if later:
            raise UsageError(f"--resume {self.path}: {self.home} has later checkpoints ({later[-1]}): to continue the "
                             f"run from its newest, --resume {shown(self.home)}; to train on from step {self.step} "
                             f"instead, branch into a new run folder: {branch} (or move the later ones out of "
                             f"{os.path.dirname(self.path)})")

    def finished(self, s: Settings, say: bool) -> bool:
        """True when there is nothing to train (said, nothing touched). --steps below the checkpoint's step is
        a usage error. A run at its last step without its final/ export (killed while exporting) is not
        finished: resuming it exports."""
        if s.steps < self.step:
            raise UsageError(f"--steps {s.steps} is below step {self.step} of {self.path}: a run does not go back; "
                             "give more --steps (or none, to finish its own)")
        in_place = self.continues_in(s.out_dir, s.run_name)
        exported = all(os.path.isfile(os.path.join(s.run_dir, "final", name)) for name in EXPORT_FILES)
        if s.steps > self.step or (in_place and not exported):  # killed while exporting: exports now
            return False
        if say:
            export = f"; its model is {os.path.join(s.run_dir, 'final')}" if in_place else ""
            print(f"{self.path}: the run is finished at step {self.step} of {s.steps}{export}. Nothing was changed; "
                  f"give --steps above {self.step} to train further")
        return True

    def write_vocab(self, vocab_file: str, is_main: bool) -> None:
        """The checkpoint's vocabulary, into the run folder, unless --vocab names one (restore() checks it)."""
        if self.vocab_from_checkpoint and is_main:
            write_text_atomic(vocab_file, self.state["vocab"])
        if self.vocab_from_checkpoint and dist.is_initialized():
            dist.barrier()

    def restore(self, model, optimizer, scaler, data, vocab_file: str, corpus_info: dict, s: Settings
                ) -> tuple[int, float]:
        """Loads the states into the run's objects; returns (step, best valid loss)."""
        if self.state["vocab"] != open(vocab_file, encoding="utf-8").read():
            raise CheckpointError(f"{self.path}: the checkpoint's vocabulary differs from {vocab_file}")
        saved = self.state.get("corpus") if isinstance(self.state.get("corpus"), dict) else {}
        then, now = [saved.get(k) for k in ("documents", "tokens")], [corpus_info[k] for k in ("documents", "tokens")]
        if None not in then and then != now:  # the data position would point into another stream
            raise CheckpointError(f"{self.path}: its corpus had {then[0]} documents and {then[1]} tokens, this one "
                                  f"has {now[0]} and {now[1]} (another --data, or its files changed): give the --data "
                                  "it was trained on")
        try:
            model.load_state_dict(self.state["model"])
            optimizer.load_state_dict(self.state["optimizer"])
            scaler.load_state_dict(self.state["scaler"])
            data.load_state_dict(self.state["data"])
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as e:
            raise CheckpointError(f"{self.path}: does not fit the model and data its settings describe "
                                  f"({first_line(e)})") from None
        for group in optimizer.param_groups:  # the saved ones, unless --lr / --weight-decay are given now
            group["initial_lr"] = s.lr
        optimizer.param_groups[0]["weight_decay"] = s.weight_decay  # group 1 (1-d parameters) has none
        return self.step, self.state["best_valid_loss"]

    def rng(self, rank: int) -> dict:
        rng = self.state["rng"]
        if isinstance(rng, list) and not 0 <= rank < len(rng):
            raise CheckpointError(f"{self.path}: saved by {len(rng)} processes, resumed by more; resume with "
                                  f"--nproc_per_node {len(rng)}")
        return rng[rank] if isinstance(rng, list) else rng


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()  # --minutes counts from here
    args = parse_args(argv)

    def command() -> int:
        resume = Resume(args.resume) if args.resume else None
        s = resolve_settings(args, resume)
        vocab_size = resume.state["config"].get("vocab_size", s.vocab_size) if resume else s.vocab_size
        check_memory(s, vocab_size if isinstance(vocab_size, int) else s.vocab_size)  # before anything is read
        if resume and resume.finished(s, say=int(os.environ.get("RANK", 0)) == 0):
            return 0
        device, rank, world = start_processes(s.device)
        check_precision(s.precision, device)
        # The folder is claimed last, and a failed start removes one it created.
        with claim_run_folder(s, resume, "run_name" not in args.given, rank) as run:
            if run.path != s.run_dir:  # a generated name another run took first (numbered), or rank 0's
                s = resolve_settings(args, resume, run.path)
            return train(s, resume, run, device, rank, world, started)
    return run_cli(command, bad_input=(DataError, CheckpointError), sigterm=True)


# ----------------------------------------------------------------------------- the command line


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n\n")[0].strip(), formatter_class=HelpFormatter)
    for add_flags in (add_model_flags, add_data_flags, add_optimisation_flags, add_logging_flags, add_system_flags):
        add_flags(p)
    return p


def add_model_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--config", default="tiny", choices=list(PRESETS),
                   help="model size preset (Turc et al. 2019 compact BERTs, and base/large); tiny keeps "
                        "1000 steps within minutes on a laptop CPU")
    g.add_argument("--layers", type=int, help="override the preset's number of encoder layers")
    g.add_argument("--hidden", type=int, help="override the preset's hidden size (intermediate = 4x)")
    g.add_argument("--heads", type=int, help="override the preset's number of attention heads")
    g.add_argument("--dropout", type=float, default=0.0,
                   help="hidden and attention-probability dropout while pretraining (BERT: 0.1; 0 fine-tunes as well "
                        "or better in a short run and steps 1.2x faster, see docs/fine-tuning.md; fine-tuning "
                        "applies its own --dropout, 0.1)")


def add_data_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    add_corpus_flags(g)  # the corpus and its preparation: declared once, shared with prepare_data.py
    g.add_argument("--valid-fraction", type=float, default=0.05, help="share of documents held out for eval")
    g.add_argument("--seq-len", type=int, default=64,
                   help="max_seq_length: tokens per sequence (BERT: 128, then 512; 64 gives a short run twice "
                        "the sequences per step, see docs/pretraining.md)")
    g.add_argument("--max-predictions", type=int,
                   help="max_predictions_per_seq (default: --mask-prob x --seq-len, rounded up: 16 at the defaults; "
                        "BERT's 20 at 0.15 x 128)")
    g.add_argument("--mask-prob", type=float, default=0.25,
                   help="masked_lm_prob (BERT: 0.15); 0.25 transfers better in a short run, see docs/pretraining.md")
    g.add_argument("--mask-prob-end", type=float,
                   help="a falling masking rate: linear from --mask-prob at the first step to this at the last "
                        "(Yang et al. 2023: 0.3 to 0.15); evaluation stays at --mask-prob (default: a constant rate)")
    g.add_argument("--short-seq-prob", type=float, default=0.1, help="share of shorter sequences")
    g.add_argument("--nsp", dest="no_nsp", action="store_false", default=True,
                   help="next sentence prediction too, as BERT: [CLS] A [SEP] B [SEP] pairs, B from another document "
                        "half the time (default: MLM only, on single segments of whole sentences, as RoBERTa; it "
                        "transfers far better in a short run, see docs/fine-tuning.md)")
    g.add_argument("--no-nsp", dest="no_nsp", action="store_true", default=True,
                   help="MLM only (default: this; kept for the commands of earlier runs)")
    g.add_argument("--whole-word-masking", action="store_true", help="mask all pieces of a word together")
    g.add_argument("--shuffle-buffer", type=int, default=10000,
                   help="instances shuffled together: the stream is made per document, in a shuffled "
                        "document order, and shuffled within blocks of this many instances")


def add_optimisation_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, default=1000, help="optimizer steps to train")
    g.add_argument("--minutes", type=float,
                   help="train for a time budget instead of --steps: the step is timed on this machine, and the "
                        "steps that fit (set-up, evaluations and export included) become the run's --steps, "
                        "saved with it; warmup and decay are laid over them")
    g.add_argument("--batch-size", type=int, default=48,
                   help="sequences per micro-batch, per process (48 x 64 tokens: --mask-prob 0.25's extra predictions "
                        "in the time of 64 x 64 at 0.15, see docs/pretraining.md)")
    g.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    g.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (AdamW)")
    g.add_argument("--warmup", type=float, default=0.06,
                   help="linear warmup: a fraction of --steps if < 1, else a number of steps")
    g.add_argument("--decay", type=float, default=0.2,
                   help="share of the steps after warmup over which the lr decays linearly to zero; until "
                        "then it holds at --lr. 1.0 is BERT's schedule (decay from the end of warmup); "
                        "0.2 learns more in a short run (see docs/pretraining.md)")
    g.add_argument("--weight-decay", type=float, default=0.01,
                   help="AdamW weight decay (never applied to biases and LayerNorm)")
    g.add_argument("--clip", type=float, default=1.0, help="gradient-norm clipping threshold")
    g.add_argument("--short-context", type=float, default=0,
                   help="the first steps (a fraction of --steps if < 1, else a number) read each sequence as "
                        "independent blocks of --short-len tokens: the same tokens and predictions, attention and "
                        "positions within a block. 0.5 gets a short run past the MLM plateau of uniform attention "
                        "and transfers far better to named entities, worse to classifying whole texts (see "
                        "docs/pretraining.md)")
    g.add_argument("--short-len", type=int, default=8, help="tokens per block while --short-context lasts")


def add_logging_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("logging and checkpoints")
    g.add_argument("--out-dir", default="runs", help="folder holding one sub-folder per run")
    g.add_argument("--run-name", help="name of this run's folder (default: time stamp + config)")
    g.add_argument("--log-interval", type=int, default=10, help="steps between train scalars")
    g.add_argument("--eval-interval", type=int, default=200, help="steps between evaluations")
    g.add_argument("--eval-batches", type=int, default=20, help="batches per evaluation")
    g.add_argument("--viz-interval", type=int, default=200,
                   help="steps between histograms, grad norms, attention maps and MLM predictions; "
                        "0 turns them off")
    g.add_argument("--save-interval", type=int, default=500, help="steps between checkpoints")
    g.add_argument("--keep-last", type=int, default=2, help="checkpoints to keep (plus best.pt)")
    g.add_argument("--resume", metavar="PATH",
                   help="continue a run: its folder (latest checkpoint) or a checkpoint file")


def add_system_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("system")
    g.add_argument("--seed", type=int, default=1337, help="seed for init, data and dropout")
    g.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")
    g.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                   help="bf16/fp16 autocast; fp16 uses a gradient scaler (CUDA only)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--no-progress", action="store_true",
                   help="log lines (step, loss, lr, tokens/s, ETA every --log-interval steps) instead of the "
                        "progress bar, as when the output is not a terminal")


if __name__ == "__main__":
    sys.exit(main())
