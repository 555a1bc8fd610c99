"""
Pretrain a BERT from scratch with masked language modelling (+ next sentence prediction), and
watch it learn in TensorBoard.

    python train_mlm.py --steps 1000                     # embedded corpus, compact model, CPU is fine
    python train_mlm.py --config small --data my_texts/ --precision bf16 --compile
    torchrun --nproc_per_node 8 train_mlm.py --config base --data corpus/ --seq-len 128 --decay 1 --batch-size 64

Everything a run makes lands in runs/<run-name>/: TensorBoard event files, checkpoints/ (the last
--keep-last, plus best.pt by valid loss), and final/, a Hugging Face layout export that
finetune_cls.py and `transformers` load.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import io
import json
import math
import os
import random
import re
import signal
import sys
import time
from dataclasses import asdict

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from data import SPECIAL_TOKENS, DataError, Prefetcher, PretrainingData, split_document_ids
from token_cache import TOO_FEW_DOCUMENTS, default_cache_dir, default_workers, prepare_pretraining_corpus
from model import (BertConfig, BertForPreTraining, CheckpointError, PRESETS, atomic_write,
                   pretraining_flops_per_sequence)

# Probe sentences: masked the same way at every visualisation step, so predictions can be compared over time.
PROBES = [
    "The function returns a new list containing all [MASK] from the iterable in sorted order.",
    "If the file does not exist , an [MASK] is raised .",
    "This module provides access to the [MASK] used or maintained by the interpreter.",
]
ATTENTION_PROBE = "If the file does not exist, the function raises an error and returns nothing."


class UsageError(ValueError):
    """A bad flag or flag combination; the scripts report it as one line and exit non-zero."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, except the empty ones (None, False) whose help says what happens."""

    def _get_help_string(self, action):
        return action.help if action.default in (None, False) else super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip(), formatter_class=HelpFormatter)
    g = p.add_argument_group("model")
    g.add_argument("--config", default="tiny", choices=list(PRESETS),
                   help="model size preset (Turc et al. 2019 compact BERTs, and base/large); tiny keeps "
                        "1000 steps within minutes on a laptop CPU")
    g.add_argument("--layers", type=int, help="override the preset's number of encoder layers")
    g.add_argument("--hidden", type=int, help="override the preset's hidden size (intermediate = 4x)")
    g.add_argument("--heads", type=int, help="override the preset's number of attention heads")
    g.add_argument("--dropout", type=float, default=0.1, help="hidden and attention-probability dropout")
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
                   help="max_predictions_per_seq (default: --mask-prob x --seq-len, rounded up, as BERT's 20 at 128)")
    g.add_argument("--mask-prob", type=float, default=0.15, help="masked_lm_prob")
    g.add_argument("--short-seq-prob", type=float, default=0.1, help="share of shorter sequences")
    g.add_argument("--no-nsp", action="store_true",
                   help="drop next sentence prediction: single segments, MLM loss only (as RoBERTa)")
    g.add_argument("--whole-word-masking", action="store_true", help="mask all pieces of a word together")
    g.add_argument("--shuffle-buffer", type=int, default=10000,
                   help="instances shuffled together: the stream is made per document, in a shuffled "
                        "document order, and shuffled within blocks of this many instances")
    g.add_argument("--cache-dir", default=default_cache_dir(),
                   help="where the extracted corpus, trained vocabularies and token ids are cached")
    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, default=1000, help="optimizer steps to train")
    g.add_argument("--batch-size", type=int, default=64, help="sequences per micro-batch, per process")
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
    g = p.add_argument_group("system")
    g.add_argument("--seed", type=int, default=1337, help="seed for init, data and dropout")
    g.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")
    g.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                   help="bf16/fp16 autocast; fp16 uses a gradient scaler (CUDA only)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--no-progress", action="store_true",
                   help="log lines (step, loss, lr, tokens/s, ETA every --log-interval steps) instead of the "
                        "progress bar, as when the output is not a terminal")
    return p


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


# ----------------------------------------------------------------------------- setup


def setup_device(name: str) -> torch.device:
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


def build_config(args, vocab_size: int) -> BertConfig:
    config = BertConfig.from_preset(args.config, vocab_size=vocab_size, hidden_dropout_prob=args.dropout,
                                    attention_probs_dropout_prob=args.dropout,
                                    max_position_embeddings=max(512, args.seq_len))
    if args.layers:
        config.num_hidden_layers = args.layers
    if args.hidden:
        config.hidden_size, config.intermediate_size = args.hidden, 4 * args.hidden
    if args.heads:
        config.num_attention_heads = args.heads
    try:
        return BertConfig(**asdict(config))  # re-validate the overridden sizes
    except ValueError as e:
        raise UsageError(f"--hidden/--heads: {e}") from None


def prepare_data(args, is_main: bool) -> tuple:
    """Corpus -> (vocab file, tokenizer, train corpus, valid corpus, corpus info). Under torchrun the
    first process of each machine (LOCAL_RANK 0) prepares the caches (vocabulary, token ids) while the
    others wait, then they only open them: every rank reads the same files, none holds the corpus.
    is_main: this process prepares (and reports progress)."""
    if not is_main:
        dist.barrier()
    vocab_file, tokenizer, corpus, info = prepare_pretraining_corpus(
        args.data, args.cache_dir, args.vocab, args.vocab_size, not args.cased, args.vocab_sample, args.text_field,
        args.workers, progress=is_main, min_documents=2)
    n = corpus.num_documents()
    if n < 2:  # prepared before, by prepare_data.py
        raise DataError(f"{' '.join(args.data or ['default corpus'])}: too few documents ({n}) for a train/valid "
                        f"split: {TOO_FEW_DOCUMENTS}")
    train_ids, valid_ids = split_document_ids(n, args.valid_fraction, args.seed)
    meta = corpus.info
    info = dict(info, documents=meta["documents"], sentences=meta["sentences"], words=meta["words"],
                tokens=meta["tokens"], cache=corpus.folder)
    if is_main and dist.is_initialized():
        dist.barrier()
    return vocab_file, tokenizer, corpus.subset(train_ids), corpus.subset(valid_ids), info


def make_optimizer(model, lr: float, weight_decay: float, device: torch.device) -> torch.optim.Optimizer:
    # As BERT: no weight decay on biases and LayerNorm (every 1-d parameter).
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = device.type in ("cuda", "cpu")  # the fused kernel: one launch for all parameters
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-6, fused=fused)


def autocast_for(device: torch.device, precision: str):
    """Mixed precision as --precision asks: bf16 or fp16 autocast, or nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def lr_lambda(warmup_steps: int, total_steps: int, decay: float = 1.0):
    """Linear warmup, then a constant lr, then linear decay to zero over the last `decay` share of the
    steps after warmup. decay=1.0 is BERT's schedule: the decay starts right after warmup."""
    decay_steps = max(1, round(decay * (total_steps - warmup_steps)))

    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, min(1.0, (total_steps - step) / decay_steps))
    return f


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


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


# ----------------------------------------------------------------------------- checkpoints


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str, state: dict) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write(path, lambda f: f.write(buf.getbuffer()))


def find_checkpoint(path: str) -> str:
    if os.path.isfile(path):
        return path
    files = sorted(glob.glob(os.path.join(path, "checkpoints", "step_*.pt")))
    if not files:
        raise UsageError(f"--resume {path}: no checkpoint file, and no checkpoints/step_*.pt in that folder")
    return files[-1]


def load_checkpoint(path: str) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or foreign file: name it, and the older checkpoints beside it
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        older = [p for p in sorted(glob.glob(os.path.join(os.path.dirname(path), "step_*.pt")))
                 if os.path.basename(p) < os.path.basename(path)]
        hint = f"; resume from an older one: --resume {older[-1]}" if older else ""
        raise CheckpointError(f"{path}: cannot read checkpoint ({reason}){hint}") from None


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(model, data: PretrainingData, start: dict, args, device, autocast, most_frequent: int) -> dict:
    """Valid metrics over a fixed set of batches: the data restarts from `start` every time."""
    model.eval()
    data.load_state_dict(start)
    sums = torch.zeros(8, dtype=torch.float64)  # on the CPU: MPS has no float64
    for _ in range(args.eval_batches):
        batch = to_device(data.next_batch(args.batch_size), device)
        with autocast:
            out = model(**model_inputs(batch, args))
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
    if not args.no_nsp:
        metrics.update(nsp_loss=nsp_loss / n_seq, nsp_acc=nsp_acc / n_seq)
    metrics["loss"] = metrics["mlm_loss"] + metrics.get("nsp_loss", 0.0)
    return metrics


def model_inputs(batch: dict, args) -> dict:
    keys = ["input_ids", "token_type_ids", "attention_mask", "masked_lm_positions", "masked_lm_ids",
            "masked_lm_weights"] + ([] if args.no_nsp else ["next_sentence_labels"])
    return {k: batch[k] for k in keys}


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def most_frequent_token(corpus, tokenizer) -> int:
    """The unigram baseline's guess: the commonest non-special token of the corpus (counted when it was
    prepared: the token ids are not read again)."""
    counts = corpus.token_counts.copy() if corpus.token_counts is not None else \
        np.bincount(np.asarray(corpus.tokens), minlength=len(tokenizer))
    counts[[tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.cls_token_id,
            tokenizer.sep_token_id, tokenizer.mask_token_id]] = 0
    return int(counts.argmax())


# ----------------------------------------------------------------------------- TensorBoard


def custom_scalars_layout() -> dict:
    pair = lambda a, b: ["Multiline", [a, b]]
    return {"Train vs valid": {"loss": pair("Loss/train", "Loss/valid"),
                               "MLM loss": pair("Loss/train_mlm", "Loss/valid_mlm"),
                               "NSP loss": pair("Loss/train_nsp", "Loss/valid_nsp"),
                               "MLM accuracy": pair("Accuracy/train_mlm", "Accuracy/valid_mlm")},
            "Performance": {"throughput": ["Multiline", ["Perf/tokens_per_sec"]],
                            "MFU": ["Multiline", ["Perf/mfu"]]}}


def layer_of(name: str) -> str:
    """Group a parameter name by transformer layer: embeddings, layer_3, pooler, mlm_head, nsp_head."""
    parts = name.split(".")
    if "layer" in parts:
        return f"layer_{parts[parts.index('layer') + 1]}"
    for key, group in (("embeddings", "embeddings"), ("pooler", "pooler"), ("predictions", "mlm_head"),
                       ("seq_relationship", "nsp_head")):
        if key in parts:
            return group
    return parts[0]


def log_gradients(writer, model, step: int) -> None:
    """Per-layer gradient norms, and weight and gradient histograms of every weight matrix."""
    norms: dict[str, float] = {}
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        norms[layer_of(name)] = norms.get(layer_of(name), 0.0) + p.grad.float().pow(2).sum().item()
        if p.dim() >= 2:
            writer.add_histogram(f"Weights/{name}", p.detach().float().cpu(), step)
            writer.add_histogram(f"Grads/{name}", p.grad.float().cpu(), step)
    for group, sq in norms.items():
        writer.add_scalar(f"GradNorm/{group}", math.sqrt(sq), step)


def heatmap(probs: np.ndarray, cell: int = 8) -> np.ndarray:
    """(heads, T, T) probabilities -> one HWC uint8 image, heads side by side, white -> dark blue.
    Each row (query) is scaled by its own maximum: one token soaking up attention ([CLS], [SEP])
    would otherwise wash out every other pattern."""
    heads, T, _ = probs.shape
    gap = 4
    img = np.full((T * cell, heads * (T * cell + gap) - gap, 3), 255, dtype=np.uint8)
    low, high = np.array([255, 255, 255]), np.array([8, 48, 107])
    for h in range(heads):
        p = probs[h] / np.maximum(probs[h].max(axis=-1, keepdims=True), 1e-9)
        rgb = (low + (high - low) * p[..., None]).astype(np.uint8)
        x0 = h * (T * cell + gap)
        img[:, x0:x0 + T * cell] = rgb.repeat(cell, 0).repeat(cell, 1)
    return img


def probe_texts(tokenizer, corpus) -> tuple[list[str], str]:
    """(masked probes, attention probe): the English ones, unless the vocabulary cannot read them (a
    Chinese corpus, say: English words come out as [UNK] or letter by letter); then sentences of the
    first valid documents, their middle token masked."""
    text = " ".join(PROBES + [ATTENTION_PROBE])
    ids = tokenizer.tokenize_to_ids(text)
    if ids.count(tokenizer.unk_token_id) <= 0.05 * len(ids) and len(ids) <= 2 * len(text.split()):
        return PROBES, ATTENTION_PROBE
    sentences = [s.tolist() for d in range(min(50, corpus.num_documents())) for s in corpus.document(d)
                 if 8 <= len(s) <= 40][:4]
    if not sentences:
        return PROBES, ATTENTION_PROBE
    def text(tokens: list[str]) -> str:  # no spaces next to CJK characters: the tokenizer splits them anyway
        return re.sub(r" (?=[\u3000-\u9fff\uff00-\uffef])|(?<=[\u3000-\u9fff\uff00-\uffef]) ", "",
                      " ".join(tokens).replace(" ##", ""))
    texts = []
    for s in sentences:
        tokens = tokenizer.convert_ids_to_tokens(s)
        tokens[len(tokens) // 2] = "[MASK]"
        texts.append(text(tokens))
    return texts[1:] or texts, text(tokenizer.convert_ids_to_tokens(sentences[0]))


@torch.no_grad()
def log_probes(writer, model, tokenizer, step: int, device, probes: tuple[list[str], str]) -> None:
    """Attention heat-maps for a fixed sentence, and top-5 MLM predictions on masked probes."""
    model.eval()
    masked, attention_probe = probes
    enc = tokenizer.encode(attention_probe)
    ids = torch.tensor([enc["input_ids"]], device=device)
    _, _, attentions = model.bert(ids, output_attentions=True)
    for i, a in enumerate(attentions):
        writer.add_image(f"Attention/layer_{i}", heatmap(a[0].float().cpu().numpy()), step, dataformats="HWC")
    if step == 0:
        writer.add_text("Attention/tokens", " ".join(tokenizer.convert_ids_to_tokens(enc["input_ids"])), step)
    rows = ["| masked input | top-5 predictions |", "|---|---|"]
    for text in masked:
        enc = tokenizer.encode(text)
        ids = torch.tensor([enc["input_ids"]], device=device)
        positions = (ids == tokenizer.mask_token_id).nonzero()[:, 1][None]
        logits = model(ids, masked_lm_positions=positions).mlm_logits[0]
        guesses = [", ".join(tokenizer.convert_ids_to_tokens(row.topk(5).indices.tolist())) for row in logits]
        rows.append(f"| {text} | {' / '.join(guesses)} |")
    writer.add_text("MLM/predictions", "\n".join(rows), step)
    model.train()


# ----------------------------------------------------------------------------- training


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        build_config(args, vocab_size=len(SPECIAL_TOKENS))  # a bad model shape is said before any data is read
        return train(args)
    except KeyboardInterrupt:  # before training started: nothing to save yet
        print("\ninterrupted", file=sys.stderr)
        return 130
    except (DataError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def train(args) -> int:
    # --- processes: torchrun sets RANK/WORLD_SIZE; a plain run is rank 0 of 1
    distributed = "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", 1)) > 1
    device = setup_device(args.device)
    if distributed:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(device)
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    is_main = rank == 0
    if args.precision == "fp16" and device.type != "cuda":
        raise UsageError(f"--precision fp16 needs CUDA (device is {device}); use bf16 or fp32")
    resume = load_checkpoint(find_checkpoint(args.resume)) if args.resume else None
    if resume:  # the run's own settings, except those given now (e.g. more --steps, another --device)
        saved = {"decay": 1.0, **resume["args"]}  # runs from before --decay decayed as BERT
        vars(args).update(saved, **{k: getattr(args, k) for k in args.given})
    args.run_name = args.run_name or time.strftime("%Y%m%d-%H%M%S-") + args.config
    run_dir = os.path.join(args.out_dir, args.run_name)
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    if resume and not args.vocab:  # the vocabulary the run was trained with, whatever the cache holds now
        args.vocab = os.path.join(run_dir, "vocab.txt")
        if is_main:
            os.makedirs(run_dir, exist_ok=True)
            atomic_write(args.vocab, lambda f: f.write(resume["vocab"].encode()))
        if distributed:
            dist.barrier()

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    # --- data, vocabulary, model
    is_local_main = int(os.environ.get("LOCAL_RANK", 0)) == 0
    vocab_file, tokenizer, train_corpus, valid_corpus, corpus_info = prepare_data(args, is_local_main)
    config = build_config(args, len(tokenizer))
    if resume and resume["vocab"] != open(vocab_file, encoding="utf-8").read():
        raise CheckpointError(f"{args.resume}: the checkpoint's vocabulary differs from {vocab_file}")
    model = BertForPreTraining(config).to(device)
    data_kw = dict(max_seq_length=args.seq_len, max_predictions_per_seq=args.max_predictions,
                   masked_lm_prob=args.mask_prob, short_seq_prob=args.short_seq_prob,
                   next_sentence=not args.no_nsp, whole_word_masking=args.whole_word_masking,
                   rank=rank, world_size=world)
    train_data = PretrainingData(train_corpus, tokenizer, seed=args.seed, shuffle_buffer=args.shuffle_buffer,
                                 **data_kw)
    valid_data = PretrainingData(valid_corpus, tokenizer, seed=args.seed + 1, shuffle_buffer=args.shuffle_buffer,
                                 **data_kw)
    eval_start = valid_data.state_dict()
    most_frequent = most_frequent_token(train_corpus, tokenizer)
    probes = probe_texts(tokenizer, valid_corpus)

    optimizer = make_optimizer(model, args.lr, args.weight_decay, device)
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.precision]
    autocast = autocast_for(device, args.precision)

    step, best_valid = 0, math.inf
    if resume:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        for group in optimizer.param_groups:  # the saved ones, unless --lr / --weight-decay are given now
            group["initial_lr"] = args.lr
        optimizer.param_groups[0]["weight_decay"] = args.weight_decay  # group 1 (1-d parameters) has none
        scaler.load_state_dict(resume["scaler"])
        train_data.load_state_dict(resume["data"])
        step, best_valid = resume["step"], resume["best_valid_loss"]
    # Built from this run's settings at its current step, so that a run resumed with more --steps
    # continues on the longer schedule (last_epoch=step-1: the constructor steps once, to `step`).
    # The warmup is kept as a number of steps, so that more --steps do not stretch it.
    args.warmup = int(args.warmup * args.steps) if args.warmup < 1 else int(args.warmup)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(args.warmup, args.steps, args.decay),
                                                  last_epoch=step - 1)
    raw_model = model
    core = torch.compile(model) if args.compile else model
    if distributed:  # without NSP the pooler and NSP head get no gradient: DDP must be told
        model = torch.nn.parallel.DistributedDataParallel(
            core, device_ids=[device] if device.type == "cuda" else None, find_unused_parameters=args.no_nsp)
    else:
        model = core

    # --- run folder, TensorBoard
    writer = None
    if is_main:
        from tensorboardX import SummaryWriter
        os.makedirs(ckpt_dir, exist_ok=True)
        # purge_step drops events a crashed run wrote after its last checkpoint.
        writer = SummaryWriter(run_dir, purge_step=step + 1 if resume else None)
        if not resume:
            writer.add_custom_scalars(custom_scalars_layout())
            writer.add_text("Run/args", "\n".join(f"    {k} = {v}" for k, v in sorted(vars(args).items())
                                                  if k != "given"), 0)
            writer.add_text("Run/corpus", "    " + json.dumps(corpus_info, indent=1).replace("\n", "\n    "), 0)
            with open(os.path.join(run_dir, "corpus.json"), "w") as f:
                json.dump(corpus_info, f, indent=1)

    tokens_per_step = args.batch_size * args.grad_accum * world * args.seq_len
    flops_per_step = pretraining_flops_per_sequence(config, args.seq_len, args.max_predictions) \
        * args.batch_size * args.grad_accum
    peak = measure_peak_flops(device, dtype)
    n_params = sum(p.numel() for p in raw_model.parameters())
    if is_main:
        print(f"model: {args.config} ({config.num_hidden_layers} layers, hidden {config.hidden_size}, "
              f"{config.num_attention_heads} heads), {n_params / 1e6:.2f}M parameters, vocab {config.vocab_size}")
        print(f"data: {corpus_info['documents']:,} documents, {corpus_info['sentences']:,} sentences, "
              f"{corpus_info['tokens']:,} tokens ({train_corpus.num_tokens():,} train); vocab {vocab_file}")
        print(f"batch: {args.batch_size} x {args.grad_accum} accum x {world} processes = "
              f"{args.batch_size * args.grad_accum * world} sequences ({tokens_per_step:,} tokens) per step; "
              f"device {device}, {args.precision}" + (", compiled" if args.compile else ""))
        print(f"logs: {run_dir}" + (f" (resuming at step {step})" if resume else ""))

    # --- signals: finish the current step, save, exit
    stop = {"signal": None}

    def on_signal(signum, frame):
        stop["signal"] = signum
        if is_main:
            print(f"\n{signal.Signals(signum).name}: finishing this step, then saving "
                  "(Ctrl-C again quits without saving)", file=sys.stderr)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}

    def checkpoint_state() -> dict:
        rng = rng_state()
        if distributed:  # every rank's dropout stream, so a resumed run continues each one
            gathered = [None] * world
            dist.all_gather_object(gathered, rng)
            rng = gathered
        return {"model": raw_model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                "data": batches.state_dict(), "step": step, "rng": rng, "best_valid_loss": best_valid,
                "config": asdict(config), "args": {k: v for k, v in vars(args).items() if k != "given"},
                "corpus": corpus_info,
                "vocab": open(vocab_file, encoding="utf-8").read()}

    def save(name: str, state: dict) -> str:
        path = os.path.join(ckpt_dir, name)
        save_checkpoint(path, state)
        return path

    def save_step_checkpoint() -> str:
        state = checkpoint_state()  # a collective under DDP: every rank calls it
        if not is_main:
            return ""
        path = save(f"step_{step:07d}.pt", state)
        for old in sorted(glob.glob(os.path.join(ckpt_dir, "step_*.pt")))[:-args.keep_last]:
            os.remove(old)
        return path

    progress = None
    if is_main and not args.no_progress and sys.stderr.isatty():  # a log file gets plain lines instead
        from tqdm import tqdm
        progress = tqdm(total=args.steps, initial=step, dynamic_ncols=True, desc="train")

    if resume:  # last, so that nothing in the set-up draws from the restored streams
        set_rng_state(resume["rng"][rank] if distributed else resume["rng"])
    batches = Prefetcher(train_data, args.batch_size)  # builds the next batches while the model trains
    timer = Timer()
    t_start = time.perf_counter()
    model.train()
    window = {"loss": 0.0, "mlm": 0.0, "nsp": 0.0, "acc": 0.0, "n": 0, "time": 0.0}
    final_metrics: dict = {}
    exit_code = 0
    if is_main and args.viz_interval and step == 0:
        with timer("viz"):
            log_probes(writer, raw_model, tokenizer, 0, device, probes)
    while step < args.steps:
        t0 = time.perf_counter()
        micro = [to_device(batches.next_batch(), device) for _ in range(args.grad_accum)]
        # The step's MLM loss is the mean over every masked token of the global batch, however the
        # batch is split into micro-batches and processes: weight each part by its share of tokens.
        n_masked = torch.stack([b["masked_lm_weights"].sum() for b in micro])
        total = n_masked.sum().clone()
        if distributed:
            dist.all_reduce(total)
        stats = torch.zeros(3, device=device)  # this step's MLM loss, NSP loss, MLM accuracy
        for i, batch in enumerate(micro):
            last = i == len(micro) - 1
            with (contextlib.nullcontext() if last or not distributed else model.no_sync()), autocast:
                out = model(**model_inputs(batch, args))
            share = (n_masked[i] / total).item()
            mlm = out.mlm_loss * share
            nsp = out.nsp_loss / (len(micro) * world) if out.nsp_loss is not None else torch.zeros((), device=device)
            # DDP averages gradients over ranks; scaling by world turns that average into the global sum.
            scaler.scale((mlm + nsp) * world).backward()
            hits = ((out.mlm_logits.argmax(-1) == batch["masked_lm_ids"]).float() * batch["masked_lm_weights"]).sum()
            stats += torch.stack([mlm.detach(), nsp.detach(), hits / total.float()])
        if distributed:
            dist.all_reduce(stats)
        mlm_loss, nsp_loss, mlm_acc = stats[0].item(), stats[1].item(), stats[2].item()
        loss = mlm_loss + nsp_loss
        if not math.isfinite(loss):
            if is_main:
                print(f"\nerror: loss is {loss} at step {step + 1}; stopping without saving (the last good "
                      f"checkpoint is kept in {ckpt_dir}). Try a lower --lr or --precision fp32.",
                      file=sys.stderr)
            exit_code = 3
            break
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip).item()
        if is_main and args.viz_interval and (step + 1) % args.viz_interval == 0:
            with timer("viz"):
                log_gradients(writer, raw_model, step + 1)  # needs the gradients: before zero_grad
        lr = scheduler.get_last_lr()[0]  # the rate this step used
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        sync(device)
        step += 1
        dt = time.perf_counter() - t0
        for k, v in (("loss", loss), ("mlm", mlm_loss), ("nsp", nsp_loss), ("acc", mlm_acc), ("time", dt)):
            window[k] += v
        window["n"] += 1

        if is_main and step % args.log_interval == 0:
            n = window["n"]
            step_time = window["time"] / n
            scalars = {"Loss/train": window["loss"] / n, "Loss/train_mlm": window["mlm"] / n,
                       "Accuracy/train_mlm": window["acc"] / n, "Optim/lr": lr, "Optim/grad_norm": grad_norm,
                       "Perf/tokens_per_sec": tokens_per_step / step_time,
                       "Perf/mfu": flops_per_step / step_time / peak, "Perf/step_time": step_time}
            if not args.no_nsp:
                scalars["Loss/train_nsp"] = window["nsp"] / n
            for tag, value in scalars.items():
                writer.add_scalar(tag, value, step)
            if progress:
                progress.set_postfix(loss=f"{scalars['Loss/train']:.3f}", lr=f"{lr:.2e}",
                                     tok_s=f"{scalars['Perf/tokens_per_sec']:,.0f}", refresh=False)
            else:
                eta = int((args.steps - step) * step_time)
                print(f"step {step}/{args.steps}: loss {scalars['Loss/train']:.4f}, lr {lr:.2e}, "
                      f"{scalars['Perf/tokens_per_sec']:,.0f} tok/s, mfu {scalars['Perf/mfu']:.1%}, "
                      f"ETA {eta // 3600}:{eta // 60 % 60:02d}:{eta % 60:02d}", flush=True)
            window = {k: 0.0 for k in window} | {"n": 0}
        if progress:
            progress.update(1)

        if step % args.eval_interval == 0 or step == args.steps:
            with timer("eval"):
                final_metrics = evaluate(core, valid_data, eval_start, args, device, autocast, most_frequent)
                # Re-measured at every eval, keeping the best: one measurement on a busy machine is low.
                peak = max(peak, measure_peak_flops(device, dtype))
            if is_main:
                log_eval(writer, final_metrics, step)
            if final_metrics["loss"] < best_valid:
                best_valid = final_metrics["loss"]
                state = checkpoint_state()
                if is_main:
                    save("best.pt", state)
        if is_main and args.viz_interval and step % args.viz_interval == 0:
            with timer("viz"):
                log_probes(writer, raw_model, tokenizer, step, device, probes)

        stopping = torch.tensor([stop["signal"] or 0], device=device)
        if distributed:  # every rank stops at the same step
            dist.all_reduce(stopping, op=dist.ReduceOp.MAX)
        if step % args.save_interval == 0 or step == args.steps or stopping.item():
            path = save_step_checkpoint()
        if stopping.item():
            name = signal.Signals(int(stopping.item())).name
            if is_main:
                print(f"\n{name}: stopped at step {step}; checkpoint saved to {path}\n"
                      f"resume with: python {os.path.relpath(__file__)} --resume {run_dir}", file=sys.stderr)
            exit_code = 128 + int(stopping.item())
            break

    batches.close()
    if progress:
        progress.close()
    for s, h in old_handlers.items():
        signal.signal(s, h)
    if is_main and step == args.steps and exit_code == 0:
        export_dir = os.path.join(run_dir, "final")
        raw_model.save_pretrained(export_dir, vocab_file=vocab_file)
        atomic_write(os.path.join(export_dir, "tokenizer_config.json"),
                     lambda f: f.write(json.dumps({"do_lower_case": not args.cased, "tokenizer_class": "BertTokenizer",
                                                   "model_max_length": args.seq_len}).encode()))
        writer.add_hparams({"config": args.config, "lr": args.lr, "batch": args.batch_size * args.grad_accum * world,
                            "seq_len": args.seq_len, "steps": args.steps, "warmup": args.warmup, "decay": args.decay,
                            "vocab_size": config.vocab_size,
                            "nsp": not args.no_nsp, "wwm": args.whole_word_masking, "precision": args.precision},
                           {f"hparam/{k}": v for k, v in final_metrics.items()}, name="hparams")
        with timer("viz"):
            log_embeddings(writer, raw_model, tokenizer, step)
        print_summary(final_metrics, run_dir, export_dir, args, timer.seconds, time.perf_counter() - t_start)
    if writer:
        writer.close()
    if distributed:
        dist.destroy_process_group()
    return exit_code


def log_eval(writer, m: dict, step: int) -> None:
    writer.add_scalar("Loss/valid", m["loss"], step)
    writer.add_scalar("Loss/valid_mlm", m["mlm_loss"], step)
    writer.add_scalar("Accuracy/valid_mlm", m["mlm_acc"], step)
    writer.add_scalar("Perplexity/valid", m["perplexity"], step)
    if "nsp_loss" in m:
        writer.add_scalar("Loss/valid_nsp", m["nsp_loss"], step)
        writer.add_scalar("Accuracy/valid_nsp", m["nsp_acc"], step)


def log_embeddings(writer, model, tokenizer, step: int, n: int = 2000) -> None:
    """The token-embedding projector, labelled with the tokens (the first n of the vocabulary)."""
    weight = model.bert.embeddings.word_embeddings.weight.detach().float().cpu()
    n = min(n, weight.size(0))
    writer.add_embedding(weight[:n], metadata=tokenizer.convert_ids_to_tokens(list(range(n))),
                         global_step=step, tag="token_embeddings")


class Timer:
    """Wall time per activity, to report what evaluation and visualisation cost next to training."""

    def __init__(self):
        self.seconds: dict[str, float] = {"eval": 0.0, "viz": 0.0}

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        yield
        self.seconds[name] += time.perf_counter() - t0


def print_summary(m: dict, run_dir: str, export_dir: str, args, seconds: dict, total: float) -> None:
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
    print(f"view the logs: tensorboard --logdir {args.out_dir}")


if __name__ == "__main__":
    sys.exit(main())
