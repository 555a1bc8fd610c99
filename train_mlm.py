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
import glob
import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from cli import HelpFormatter, UsageError, run_cli
from data import SPECIAL_TOKENS, DataError, Prefetcher, PretrainingData, split_document_ids
from model import (BertConfig, BertForPreTraining, CheckpointError, PRESETS, atomic_write,
                   pretraining_flops_per_sequence)
from token_cache import TOO_FEW_DOCUMENTS, default_cache_dir, default_workers, prepare_pretraining_corpus
from training import (PRECISION_DTYPES, Settings, StopSignal, Timer, autocast_for,
                      check_precision, find_checkpoint, load_checkpoint, lr_lambda, make_optimizer,
                      measure_peak_flops, rng_state, save_checkpoint, seed_everything, set_rng_state,
                      setup_device, sync)
from visuals import (custom_scalars_layout, log_embeddings, log_eval, log_gradients, log_probes, log_settings,
                     probe_texts)


# ----------------------------------------------------------------------------- the training loop


def train(s: Settings, resume: Resume | None) -> int:
    # --- processes: torchrun sets RANK/WORLD_SIZE; a plain run is rank 0 of 1
    device, rank, world = start_processes(s.device)
    is_main = rank == 0
    check_precision(s.precision, device)
    run_dir = os.path.join(s.out_dir, s.run_name)
    if resume:
        resume.write_vocab(is_main)
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
    step, best_valid = resume.restore(model, optimizer, scaler, train_data, vocab_file, s) if resume \
        else (0, math.inf)
    # last_epoch=step-1: the constructor steps once, to `step`, so a resumed run continues its schedule.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(s.warmup, s.steps, s.decay),
                                                  last_epoch=step - 1)
    raw_model, core, model = wrap_model(model, s, device)

    # --- what the run writes: TensorBoard, checkpoints, log lines; how it stops
    writer = open_writer(run_dir, s, step, corpus_info) if is_main else None
    batches = Prefetcher(train_data, s.batch_size)  # builds the next batches while the model trains
    checkpoints = Checkpointer(os.path.join(run_dir, "checkpoints"), s.keep_last, is_main, best_valid, {
        "model": raw_model, "optimizer": optimizer, "scaler": scaler, "data": batches, "config": asdict(config),
        "args": s.as_dict(), "corpus": corpus_info, "vocab": open(vocab_file, encoding="utf-8").read()})
    if is_main:
        print_setup(s, config, raw_model, corpus_info, train_corpus, vocab_file, world, device, run_dir, step)
    log = TrainLog(writer, s, step, world, pretraining_flops_per_sequence(config, s.seq_len, s.max_predictions),
                   measure_peak_flops(device, PRECISION_DTYPES[s.precision]))  # the bar, after the set-up lines
    stop = StopSignal(announce=is_main)
    stop.install()
    if resume:  # last, so that nothing in the set-up draws from the restored streams
        set_rng_state(resume.rng(rank))
    timer, metrics, exit_code = Timer(), {}, 0
    model.train()
    if is_main and s.viz_interval and step == 0:
        with timer("viz"):
            log_probes(writer, raw_model, tokenizer, 0, device, probes)

    while step < s.steps:
        t0 = time.perf_counter()
        micro = [to_device(batches.next_batch(), device) for _ in range(s.grad_accum)]
        mlm_loss, nsp_loss, mlm_acc = forward_backward(model, micro, scaler, autocast, s.no_nsp)
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
                metrics = evaluate(core, valid_data, eval_start, s, device, autocast, most_frequent)
                log.remeasure_peak(device, PRECISION_DTYPES[s.precision])
            if is_main:
                log_eval(writer, metrics, step)
            if checkpoints.improves(metrics["loss"]):
                checkpoints.save("best.pt", step)
        if is_main and viz_due(s, step):
            with timer("viz"):
                log_probes(writer, raw_model, tokenizer, step, device, probes)

        signum = stop.agreed(device)  # Ctrl-C or SIGTERM on any process: save, then exit 128 + signal
        if step % s.save_interval == 0 or step == s.steps or signum:
            path = checkpoints.save_step(step)
        if signum:
            if is_main:
                print_stopped(signum, step, path, run_dir)
            exit_code = 128 + signum
            break

    batches.close()
    log.close()
    stop.restore()
    if is_main and step == s.steps and exit_code == 0:
        finish_run(s, writer, raw_model, tokenizer, vocab_file, config, metrics, run_dir, world, timer, log.t_start)
    if writer:
        writer.close()
    if dist.is_initialized():
        dist.destroy_process_group()
    return exit_code


def forward_backward(model, micro: list[dict], scaler, autocast, no_nsp: bool) -> tuple[float, float, float]:
    """One optimizer step's forward and backward passes over its micro-batches (and, under DDP, over every
    process's), weighted so that the gradient is that of one big batch: the MLM loss is the mean over every
    masked token of the global batch, however it is split into micro-batches and processes; the NSP loss the
    mean over its sequences. Returns the step's (MLM loss, NSP loss, MLM accuracy), equal on every process."""
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
            out = model(**model_inputs(batch, no_nsp))
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


class Checkpointer:
    """The run's checkpoints and the rules for keeping them: step_N.pt at every --save-interval, at the
    end and on a stop signal (the last --keep-last are kept), and best.pt whenever the valid loss improves.
    `parts` are what a checkpoint holds: objects with a state_dict() (model, optimizer, scaler, data
    stream) and plain values (config, settings, corpus, vocabulary). Saving is a collective under DDP
    (every process's RNG streams are gathered): every rank calls it, the first writes."""

    def __init__(self, folder: str, keep_last: int, write: bool, best_valid: float, parts: dict):
        self.folder, self.keep_last, self.write = folder, keep_last, write
        self.best_valid, self.parts = best_valid, parts
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
        path = self.save(f"step_{step:07d}.pt", step)
        if self.write:
            for old in sorted(glob.glob(os.path.join(self.folder, "step_*.pt")))[:-self.keep_last]:
                os.remove(old)
        return path


class TrainLog:
    """Train scalars every --log-interval steps, averaged over the steps since the last: to TensorBoard,
    and to the terminal as a progress bar, or as a plain line (step, loss, lr, tokens/s, ETA) when the
    output goes to a file, as on a cluster. Only the first process logs (writer None elsewhere)."""

    def __init__(self, writer, s: Settings, step: int, world: int, flops_per_sequence: float, peak_flops: float):
        self.writer, self.s, self.peak = writer, s, peak_flops
        self.tokens_per_step = s.batch_size * s.grad_accum * world * s.seq_len
        self.flops_per_step = flops_per_sequence * s.batch_size * s.grad_accum
        self.window = self._empty()
        self.t_start = time.perf_counter()
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
            eta = int((self.s.steps - step) * step_time)
            print(f"step {step}/{self.s.steps}: loss {scalars['Loss/train']:.4f}, lr {lr:.2e}, "
                  f"{scalars['Perf/tokens_per_sec']:,.0f} tok/s, mfu {scalars['Perf/mfu']:.1%}, "
                  f"ETA {eta // 3600}:{eta // 60 % 60:02d}:{eta % 60:02d}", flush=True)
        self.window = self._empty()

    def close(self) -> None:
        if self.progress:
            self.progress.close()


def viz_due(s: Settings, step: int) -> bool:
    return bool(s.viz_interval) and step % s.viz_interval == 0


@torch.no_grad()
def evaluate(model, data: PretrainingData, start: dict, s: Settings, device, autocast, most_frequent: int) -> dict:
    """Valid metrics over a fixed set of batches: the data restarts from `start` every time."""
    model.eval()
    data.load_state_dict(start)
    sums = torch.zeros(8, dtype=torch.float64)  # on the CPU: MPS has no float64
    for _ in range(s.eval_batches):
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
    print(f"\n{signal.Signals(signum).name}: stopped at step {step}; checkpoint saved to {path}\n"
          f"resume with: python {os.path.relpath(__file__)} --resume {run_dir}", file=sys.stderr)


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


def build_config(s, vocab_size: int) -> BertConfig:
    config = BertConfig.from_preset(s.config, vocab_size=vocab_size, hidden_dropout_prob=s.dropout,
                                    attention_probs_dropout_prob=s.dropout,
                                    max_position_embeddings=max(512, s.seq_len))
    if s.layers:
        config.num_hidden_layers = s.layers
    if s.hidden:
        config.hidden_size, config.intermediate_size = s.hidden, 4 * s.hidden
    if s.heads:
        config.num_attention_heads = s.heads
    try:
        return BertConfig(**asdict(config))  # re-validate the overridden sizes
    except ValueError as e:
        raise UsageError(f"--hidden/--heads: {e}") from None


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
    train_ids, valid_ids = split_document_ids(n, s.valid_fraction, s.seed)
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
    core = torch.compile(model) if s.compile else model
    if not dist.is_initialized():
        return model, core, core
    # Without NSP the pooler and NSP head get no gradient: DDP must be told.
    ddp = torch.nn.parallel.DistributedDataParallel(
        core, device_ids=[device] if device.type == "cuda" else None, find_unused_parameters=s.no_nsp)
    return model, core, ddp


def open_writer(run_dir: str, s: Settings, step: int, corpus_info: dict):
    """The run's TensorBoard writer; a new run also records its settings and corpus."""
    from tensorboardX import SummaryWriter
    os.makedirs(run_dir, exist_ok=True)
    # purge_step drops events a crashed run wrote after its last checkpoint.
    writer = SummaryWriter(run_dir, purge_step=step + 1 if step else None)
    if not step:
        writer.add_custom_scalars(custom_scalars_layout())
        log_settings(writer, s.as_dict())
        writer.add_text("Run/corpus", "    " + json.dumps(corpus_info, indent=1).replace("\n", "\n    "), 0)
        with open(os.path.join(run_dir, "corpus.json"), "w") as f:
            json.dump(corpus_info, f, indent=1)
    return writer


def print_setup(s: Settings, config, model, corpus_info: dict, train_corpus, vocab_file: str, world: int,
                device, run_dir: str, step: int) -> None:
    n_params = sum(p.numel() for p in model.parameters())
    sequences = s.batch_size * s.grad_accum * world
    print(f"model: {s.config} ({config.num_hidden_layers} layers, hidden {config.hidden_size}, "
          f"{config.num_attention_heads} heads), {n_params / 1e6:.2f}M parameters, vocab {config.vocab_size}")
    print(f"data: {corpus_info['documents']:,} documents, {corpus_info['sentences']:,} sentences, "
          f"{corpus_info['tokens']:,} tokens ({train_corpus.num_tokens():,} train); vocab {vocab_file}")
    print(f"batch: {s.batch_size} x {s.grad_accum} accum x {world} processes = {sequences} sequences "
          f"({sequences * s.seq_len:,} tokens) per step; device {device}, {s.precision}"
          + (", compiled" if s.compile else ""))
    print(f"logs: {run_dir}" + (f" (resuming at step {step})" if step else ""))


def finish_run(s: Settings, writer, model, tokenizer, vocab_file: str, config, metrics: dict, run_dir: str,
               world: int, timer: Timer, t_start: float) -> None:
    """The end of a completed run: the Hugging Face export, the hparams table, the embedding projector
    and the summary."""
    export_dir = os.path.join(run_dir, "final")
    model.save_pretrained(export_dir, vocab_file=vocab_file)
    atomic_write(os.path.join(export_dir, "tokenizer_config.json"),
                 lambda f: f.write(json.dumps({"do_lower_case": not s.cased, "tokenizer_class": "BertTokenizer",
                                               "model_max_length": s.seq_len}).encode()))
    writer.add_hparams({"config": s.config, "lr": s.lr, "batch": s.batch_size * s.grad_accum * world,
                        "seq_len": s.seq_len, "steps": s.steps, "warmup": s.warmup, "decay": s.decay,
                        "vocab_size": config.vocab_size, "nsp": not s.no_nsp, "wwm": s.whole_word_masking,
                        "precision": s.precision},
                       {f"hparam/{k}": v for k, v in metrics.items()}, name="hparams")
    with timer("viz"):
        log_embeddings(writer, model, tokenizer, s.steps)
    print_summary(metrics, run_dir, export_dir, s, timer.seconds, time.perf_counter() - t_start)


def print_summary(m: dict, run_dir: str, export_dir: str, s: Settings, seconds: dict, total: float) -> None:
    print("\n" + "-" * 64)
    print(f"{total:.0f}s: {total - seconds['eval'] - seconds['viz']:.0f}s training, {seconds['eval']:.0f}s "
          f"evaluation, {seconds['viz']:.1f}s TensorBoard visualisation ({seconds['viz'] / total:.1%})")
    print(f"valid MLM loss {m['mlm_loss']:.4f} (perplexity {m['perplexity']:.1f}), "
          f"MLM accuracy {m['mlm_acc']:.2%} vs {m['unigram_acc']:.2%} for the unigram baseline "
          "(always the most frequent token)")
    if "nsp_acc" in m:
        print(f"valid NSP accuracy {m['nsp_acc']:.2%} (chance: 50%)")
    print(f"checkpoints: {os.path.join(run_dir, 'checkpoints')}")
    print(f"model (Hugging Face layout): {export_dir}")
    print(f"view the logs: tensorboard --logdir {s.out_dir}")


# ----------------------------------------------------------------------------- settings and resume


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    # Which flags were given, not defaulted: a resumed run takes the rest from its checkpoint.
    given = build_parser()
    for action in given._actions:
        action.default = argparse.SUPPRESS
    args.given = set(vars(given.parse_args(argv)))
    for name, low, high in (("dropout", 0, 1), ("mask_prob", 0, 1), ("short_seq_prob", 0, 1)):
        value = getattr(args, name)
        if not low <= value < high or (name == "mask_prob" and value == 0):
            p.error(f"--{name.replace('_', '-')} must be in [{low}, {high}), got {value}")
    if args.max_predictions is None:
        args.max_predictions = math.ceil(args.mask_prob * args.seq_len)
    for name in ("steps", "batch_size", "grad_accum", "seq_len", "max_predictions", "log_interval",
                 "eval_interval", "eval_batches", "save_interval", "keep_last", "vocab_size", "workers",
                 "vocab_sample", "shuffle_buffer"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not 0 < args.valid_fraction < 1:
        p.error(f"--valid-fraction must be between 0 and 1, got {args.valid_fraction}")
    if args.viz_interval < 0 or args.lr <= 0 or args.warmup < 0:
        p.error("--viz-interval, --lr and --warmup must not be negative (and --lr not zero)")
    if not 0 < args.decay <= 1:
        p.error(f"--decay must be in (0, 1], got {args.decay}")
    return args


def resolve_settings(args: argparse.Namespace, resume: Resume | None) -> Settings:
    """The flags (and, on resume, the run's own settings) resolved once: the run name, the vocabulary of
    a resumed run, and the warmup as a number of steps, so that more --steps later do not stretch it."""
    values = {k: v for k, v in vars(args).items() if k != "given"}
    if resume:
        values = resume.settings(values, args.given)
    values["run_name"] = values["run_name"] or time.strftime("%Y%m%d-%H%M%S-") + values["config"]
    warmup, steps = values["warmup"], values["steps"]
    values["warmup"] = int(warmup * steps) if warmup < 1 else int(warmup)
    return Settings(**values)


class Resume:
    """Everything --resume means, in one place: the run's own settings, except the flags given now (more
    --steps, another --device, a new --lr); the vocabulary it was trained with; its model, optimizer,
    scaler, data position, step, best valid loss and every process's RNG streams."""

    def __init__(self, path: str):
        self.path = find_checkpoint(path)
        self.state = load_checkpoint(self.path)

    def settings(self, flags: dict, given: set[str]) -> dict:
        saved = {"decay": 1.0, **self.state["args"]}  # runs from before --decay decayed as BERT
        values = {**flags, **saved, **{k: flags[k] for k in given}}
        self.vocab_to_write = None
        if not values["vocab"]:  # the vocabulary the run was trained with, whatever the cache holds now
            values["vocab"] = self.vocab_to_write = os.path.join(values["out_dir"], values["run_name"], "vocab.txt")
        return values

    def write_vocab(self, is_main: bool) -> None:
        """The checkpoint's vocabulary, into the run folder, unless --vocab names one (it is checked)."""
        if self.vocab_to_write and is_main:
            os.makedirs(os.path.dirname(self.vocab_to_write), exist_ok=True)
            atomic_write(self.vocab_to_write, lambda f: f.write(self.state["vocab"].encode()))
        if self.vocab_to_write and dist.is_initialized():
            dist.barrier()

    def restore(self, model, optimizer, scaler, data, vocab_file: str, s: Settings) -> tuple[int, float]:
        """Loads the states into the run's objects; returns (step, best valid loss)."""
        if self.state["vocab"] != open(vocab_file, encoding="utf-8").read():
            raise CheckpointError(f"{s.resume}: the checkpoint's vocabulary differs from {vocab_file}")
        model.load_state_dict(self.state["model"])
        optimizer.load_state_dict(self.state["optimizer"])
        for group in optimizer.param_groups:  # the saved ones, unless --lr / --weight-decay are given now
            group["initial_lr"] = s.lr
        optimizer.param_groups[0]["weight_decay"] = s.weight_decay  # group 1 (1-d parameters) has none
        scaler.load_state_dict(self.state["scaler"])
        data.load_state_dict(self.state["data"])
        return self.state["step"], self.state["best_valid_loss"]

    def rng(self, rank: int) -> dict:
        rng = self.state["rng"]
        return rng[rank] if isinstance(rng, list) else rng


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def command() -> int:
        resume = Resume(args.resume) if args.resume else None
        s = resolve_settings(args, resume)
        build_config(s, vocab_size=len(SPECIAL_TOKENS))  # a bad model shape is said before any data is read
        return train(s, resume)
    return run_cli(command, bad_input=(DataError, CheckpointError))


# ----------------------------------------------------------------------------- the command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip(), formatter_class=HelpFormatter)
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
    g.add_argument("--dropout", type=float, default=0.1, help="hidden and attention-probability dropout")


def add_data_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", nargs="+", metavar="PATH",
                   help="corpus files, folders or glob patterns: text in BERT's format (a sentence per line, "
                        "blank line between documents), plain prose or WikiText; JSONL with a document per "
                        "line; Parquet (needs pyarrow); any of them gzipped (.gz). Prepared once into a "
                        "memory-mapped cache (see prepare_data.py); default: the embedded corpus of Python, "
                        "numpy and torch documentation")
    g.add_argument("--text-field", default="text", help="the JSONL key / Parquet column holding a document's text")
    g.add_argument("--workers", type=int, default=default_workers(),
                   help="processes that tokenise the corpus when it is first prepared (default: one per CPU)")
    g.add_argument("--vocab", metavar="FILE", help="an existing vocab.txt (e.g. bert-base-uncased's); "
                   "default: train a WordPiece vocabulary on the corpus (cached)")
    g.add_argument("--vocab-size", type=int, default=8192, help="size of the vocabulary to train")
    g.add_argument("--vocab-sample", type=float, default=50,
                   help="MB of the corpus, spread over all of it, to train the vocabulary on")
    g.add_argument("--cased", action="store_true", help="keep case and accents (the default lower-cases and strips accents)")
    g.add_argument("--valid-fraction", type=float, default=0.05, help="share of documents held out for eval")
    g.add_argument("--seq-len", type=int, default=64,
                   help="max_seq_length: tokens per sequence (BERT: 128, then 512; 64 gives a short run twice "
                        "the NSP pairs per step, see the README)")
    g.add_argument("--max-predictions", type=int,
                   help="max_predictions_per_seq (default: --mask-prob x --seq-len, rounded up: 16 at the defaults; "
                        "BERT's 20 at 0.15 x 128)")
    g.add_argument("--mask-prob", type=float, default=0.25,
                   help="masked_lm_prob (BERT: 0.15); 0.25 transfers better in a short run, see the README")
    g.add_argument("--short-seq-prob", type=float, default=0.1, help="share of shorter sequences")
    g.add_argument("--no-nsp", action="store_true",
                   help="drop next sentence prediction: single segments, MLM loss only (as RoBERTa)")
    g.add_argument("--whole-word-masking", action="store_true", help="mask all pieces of a word together")
    g.add_argument("--shuffle-buffer", type=int, default=10000,
                   help="instances shuffled together: the stream is made per document, in a shuffled "
                        "document order, and shuffled within blocks of this many instances")
    g.add_argument("--cache-dir", default=default_cache_dir(),
                   help="where the extracted corpus, trained vocabularies and token ids are cached")


def add_optimisation_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, default=1000, help="optimizer steps to train")
    g.add_argument("--batch-size", type=int, default=48,
                   help="sequences per micro-batch, per process (48 x 64 tokens: --mask-prob 0.25's extra predictions "
                        "in the time of 64 x 64 at 0.15, see the README)")
    g.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    g.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (AdamW)")
    g.add_argument("--warmup", type=float, default=0.06,
                   help="linear warmup: a fraction of --steps if < 1, else a number of steps")
    g.add_argument("--decay", type=float, default=0.2,
                   help="share of the steps after warmup over which the lr decays linearly to zero; until "
                        "then it holds at --lr. 1.0 is BERT's schedule (decay from the end of warmup); "
                        "0.2 learns more in a short run (see the README)")
    g.add_argument("--weight-decay", type=float, default=0.01,
                   help="AdamW weight decay (never applied to biases and LayerNorm)")
    g.add_argument("--clip", type=float, default=1.0, help="gradient-norm clipping threshold")


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
