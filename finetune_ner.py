"""
Fine-tune a pretrained BERT to tag named entities (token classification), and watch it in TensorBoard.

    python finetune_ner.py                                   # newest train_mlm.py model, the embedded demo task
    python finetune_ner.py --init scratch                    # the same recipe from random weights: the baseline
    python finetune_ner.py --compare                         # both side by side: did pretraining help?
    python finetune_ner.py --train train.txt --valid dev.txt --test test.txt    # CoNLL columns, a character a
                                                             # line (Chinese), or JSONL
    python finetune_ner.py predict --model runs/ner-demo-<time>/model "Call torch.cat on the list."

The recipe is finetune_cls.py's (BERT's: AdamW, warmup then linear decay, 3 epochs, batch 32), over word
pieces: each word is labelled at its first piece, and a sentence longer than --max-length is split into
overlapping windows, never cut short. The tags (IOB1, BIO or BIOES, detected or --scheme) are read as BIO;
the entity scores are the field's (exact span and type, conlleval's rules), and the best epoch by valid
entity F1 is kept. Decoding keeps to valid BIO sequences (--decode viterbi) unless --decode argmax.

The embedded demo task: sentences of torch's, numpy's and the standard library's docstrings, each name of
code tagged by the markup its authors gave it (CLASS, FUNCTION, ATTRIBUTE, MODULE; CODE for literals).

Everything a run makes lands in runs/ner-<task>-<time>/: TensorBoard events, model/ (the best epoch, in
the Hugging Face layout, plus labels.json: the tag set) and results.json.

Reading order: fine_tune() is one run on one page; evaluate() tags sentences and scores them; the tags
and scores themselves are in ner.py, the tasks in ner_tasks.py, the steps in training.Trainer.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

import ner
from cli import ArgumentParser, DataError, HelpFormatter, UsageError, not_positive, pad, run_cli, run_predict
from data import LabelMap, classification_batches
from files import RunFolder, check_run_name, write_folder, write_json
from model import BertForTokenClassification, CheckpointError, PRESETS
from ner_tasks import TaggingTask, load_tagging_task
from pretrained import (checkpoint_dir, check_vocab, choose_init, default_lr, initial_model, load_tokenizer,
                        newest_pretrained, tokenizer_settings, warn_if_misread)
from token_cache import default_cache_dir
from tokenization import BertTokenizer, decode_text, vocab_size_problem
from training import (Settings, StopSignal, Trainer, check_precision, fine_tuning_problem, seed_everything,
                      setup_device)
from visuals import confusion_image, log_settings, summary_writer


# ----------------------------------------------------------------------------- one fine-tuning run


def fine_tune(s: Settings, task: TaggingTask, init: str, run_dir: str, device: torch.device, seed: int,
              stop: StopSignal, baseline_of: str | None = None) -> dict:
    """Fine-tune one model (a checkpoint, or 'scratch' of the size of `baseline_of`) to tag the task's
    entities; the best epoch by valid entity F1 is saved to run_dir/model and reported on the test split."""
    stop.raise_if_stopped()
    t_start = time.time()
    seed_everything(seed)
    labels = ner.label_list(task.train)
    texts = [" ".join(x.words) for x in task.train]
    model, tokenizer, init, init_note = initial_model(s, init, texts, LabelMap(labels), baseline_of,
                                                      BertForTokenClassification)
    max_length = window_length(s.max_length, init if init != "scratch" else baseline_of, model.config)
    if s.stride is not None and s.stride > max_length - 2:
        raise UsageError(f"--stride {s.stride} does not fit windows of {max_length} word pieces: at most {max_length - 2}")
    label_ids = {label: i for i, label in enumerate(labels)}
    (train, n_split), valid, test = (ner.windows(x, tokenizer, label_ids, max_length, s.stride)
                                     for x in (task.train, task.valid, task.test))
    examples = [{"input_ids": w.input_ids, "token_type_ids": [0] * len(w.input_ids), "label": w.labels} for w in train]
    steps_per_epoch = math.ceil(len(examples) / s.batch_size)
    trainer = Trainer.start(model.to(device), s, seed, s.epochs * steps_per_epoch, default_lr(model.config), device,
                            stop)
    print_setup(s, task, labels, init_note, model, trainer.lr, steps_per_epoch, device, n_split + valid[1] + test[1],
                max_length)
    warn_if_misread(tokenizer, texts, init if init != "scratch" else tokenizer.vocab_file, picked=s.init is None)
    trainer.writer = writer = open_writer(run_dir, s, seed, task, init_note)
    model_dir = os.path.join(run_dir, "model")

    best, best_epoch, history = -math.inf, 0, []
    for epoch in range(1, s.epochs + 1):
        batches = classification_batches(examples, s.batch_size, tokenizer.pad_token_id, shuffle=True,
                                         seed=seed + epoch, bucket_size=s.bucket_size or None)
        train_loss = trainer.train_epoch(batches, steps_per_epoch, len(examples), epoch)
        result = evaluate(model, task.valid, valid[0], labels, s, tokenizer.pad_token_id, device, trainer.autocast)
        stop.raise_if_stopped()
        print(f"Epoch {epoch}: Train Loss = {train_loss:.4f}, Valid Loss = {result['loss']:.4f}, "
              f"Valid F1 = {result['f1']:.4f}", flush=True)
        log_validation(writer, result, task.valid, trainer.step)
        history.append({"epoch": epoch, "train_loss": train_loss,
                        **{f"valid_{k}": float(result[k]) for k in ("loss", "precision", "recall", "f1")}})
        if result["f1"] > best:
            best, best_epoch = result["f1"], epoch
            save_model(model, tokenizer, labels, model_dir, max_length)

    # --- the best epoch on the test split
    model = BertForTokenClassification.from_pretrained(model_dir).to(device)
    split, sentences, wins = ("test", task.test, test[0]) if task.test else ("valid", task.valid, valid[0])
    result = evaluate(model, sentences, wins, labels, s, tokenizer.pad_token_id, device, trainer.autocast)
    wall = time.time() - t_start
    print_report(result, split, best_epoch, model_dir, wall)
    results = {"task": task.info, "init": init_note, "labels": labels, "best_epoch": best_epoch, "history": history,
               "split": split, "decode": s.decode, "best_valid_f1": float(best), "wall_seconds": round(wall, 1),
               **{k: result[k] for k in ("loss", "precision", "recall", "f1", "accuracy", "per_type",
                                          "f1_by_decoding")}}
    write_json(os.path.join(run_dir, "results.json"), results)
    writer.add_hparams({"task": task.name, "init": init, "lr": trainer.lr, "epochs": s.epochs,
                        "batch_size": s.batch_size, "max_length": max_length, "decode": s.decode, "seed": seed},
                       {f"hparam/{split}_f1": result["f1"], "hparam/best_valid_f1": float(best)}, name="hparams")
    writer.close()
    return results


@torch.no_grad()
def evaluate(model, sentences: list[ner.Sentence], wins: list[ner.Window], labels: list[str], s: Settings,
             pad_token_id: int, device, autocast) -> dict:
    """Tag the sentences (each word from its most central window, decoded by --decode) and score the tags
    against the gold ones: entity precision, recall and F1 overall and per type, token accuracy, the type
    confusion; and the mean loss over the labelled pieces."""
    log_probs, loss = window_log_probs(model, wins, s.batch_size, pad_token_id, device, autocast)
    word_scores = ner.word_scores(sentences, wins, log_probs)
    gold = [x.tags for x in sentences]
    # both decodings of the same scores, for the record (results.json): which is better is measured, not assumed
    f1 = {how: ner.entity_scores(gold, decode(word_scores, labels, how))["f1"] for how in ("viterbi", "argmax")}
    pred = decode(word_scores, labels, s.decode)
    names, matrix = ner.type_confusion(gold, pred)
    return {**ner.entity_scores(gold, pred), "loss": loss, "pred": pred, "confusion": (names, matrix),
            "f1_by_decoding": f1}


@torch.no_grad()
def window_log_probs(model, wins: list[ner.Window], batch_size: int, pad_token_id: int, device, autocast
                     ) -> tuple[list[np.ndarray], float]:
    """Each window's per-piece label log-probabilities, in the windows' order (batched by length), and the
    mean cross-entropy over the labelled pieces."""
    model.eval()
    order = sorted(range(len(wins)), key=lambda i: len(wins[i].input_ids))
    examples = [{"input_ids": wins[i].input_ids, "token_type_ids": [0] * len(wins[i].input_ids),
                 "label": wins[i].labels} for i in order]
    out: list[np.ndarray] = [np.zeros(0)] * len(wins)
    loss_sum, labelled = 0.0, 0
    batches = classification_batches(examples, batch_size, pad_token_id, shuffle=False, seed=0, bucket_size=None)
    for start, batch in zip(range(0, len(order), batch_size), batches):
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast:
            _, logits = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
        lp = F.log_softmax(logits.float(), -1)
        mask = batch["labels"] != ner.IGNORE
        loss_sum -= lp.gather(-1, batch["labels"].clamp(min=0).unsqueeze(-1)).squeeze(-1)[mask].sum().item()
        labelled += int(mask.sum())
        for row, i in enumerate(order[start:start + batch_size]):
            out[i] = lp[row, :len(wins[i].input_ids)].cpu().numpy()
    model.train()
    return out, loss_sum / max(labelled, 1)


WINDOW = 128  # word pieces per window at most, by default


def window_length(asked: int | None, checkpoint: str | None, config) -> int:
    """--max-length, else the length `checkpoint` was trained at (its tokenizer_config.json's model_max_length)
    up to WINDOW: windows lose nothing, and positions beyond the pretraining's start untrained. On People's Daily,
    windows of 64 gave entity F1 0.699 (pretrained) and 0.720 (scratch) where 128 gave 0.562 and 0.556."""
    trained = (tokenizer_settings(checkpoint) or {}).get("model_max_length") if checkpoint else None
    return int(min(asked or min(WINDOW, trained or WINDOW), config.max_position_embeddings))


def decode(scores: list[np.ndarray], labels: list[str], how: str) -> list[list[str]]:
    """Per-word label log-probabilities to tags: the best valid BIO sequence (viterbi), or each word's best."""
    allowed = ner.allowed_transitions(labels)
    paths = [ner.viterbi(lp, allowed) if how == "viterbi" else list(lp.argmax(-1)) for lp in scores]
    return [[labels[i] for i in path] for path in paths]


def save_model(model, tokenizer: BertTokenizer, labels: list[str], path: str, max_length: int) -> None:
    """The Hugging Face layout plus labels.json (the tag set), written beside `path`, then moved into place; the
    window it was trained on is its tokenizer_config.json's model_max_length, which predict reads with."""
    settings = {"do_lower_case": tokenizer.do_lower_case, "tokenizer_class": "BertTokenizer",
                "model_max_length": max_length}

    def fill(folder: str) -> None:
        model.save_pretrained(folder, vocab_file=tokenizer.vocab_file)
        write_json(os.path.join(folder, "tokenizer_config.json"), settings)
        ner.save_labels(labels, os.path.join(folder, "labels.json"))
    write_folder(path, fill)


# ----------------------------------------------------------------------------- what a run says and draws


def print_setup(s: Settings, task: TaggingTask, labels: list[str], init_note: str, model, lr: float,
                steps_per_epoch: int, device, split: int, max_length: int) -> None:
    kinds = sorted({label[2:] for label in labels if label != "O"})
    n_params = sum(p.numel() for p in model.parameters())
    print(f"task: {task.name}, {len(kinds)} entity types ({', '.join(kinds)}); {len(task.train)} train, "
          f"{len(task.valid)} valid, {len(task.test)} test sentences")
    if split:
        print(f"note: {split} sentences longer than windows of {max_length} word pieces are read in overlapping "
              "windows (none is cut short)")
    print(f"init: {init_note}")
    print(f"model: {model.config.num_hidden_layers} layers, hidden {model.config.hidden_size}, "
          f"{n_params / 1e6:.2f}M parameters; lr {lr:g}, {s.epochs} epochs x {steps_per_epoch} steps of "
          f"{s.batch_size}; decoding {s.decode}; device {device}, {s.precision}")


def open_writer(run_dir: str, s: Settings, seed: int, task: TaggingTask, init_note: str):
    writer = summary_writer(run_dir)
    print(f"logs: {run_dir}")
    log_settings(writer, {**s.as_dict(), "seed": seed})
    writer.add_text("Run/task", "    " + json.dumps(task.info, indent=1, ensure_ascii=False).replace("\n", "\n    ")
                    + f"\n\ninit: {init_note}", 0)
    return writer


def log_validation(writer, result: dict, sentences: list[ner.Sentence], step: int, probes: int = 8) -> None:
    """The tutorial's Loss/valid, the entity scores overall and per type, the confusion over entity types (with
    missed and spurious), and probe sentences with their gold and predicted entities marked."""
    for tag, value in (("Loss/valid", result["loss"]), ("F1/valid", result["f1"]),
                       ("Precision/valid", result["precision"]), ("Recall/valid", result["recall"]),
                       ("Accuracy/valid_token", result["accuracy"])):
        writer.add_scalar(tag, value, step)
    for kind, scores in result["per_type"].items():
        writer.add_scalar(f"F1/valid_{kind}", scores["f1"], step)
    names, matrix = result["confusion"]
    writer.add_image("Entities/confusion", confusion_image(matrix), step, dataformats="HWC")
    writer.add_text("Entities/confusion_table", "| true \\ predicted | " + " | ".join(names) + " |\n|"
                    + "---|" * (len(names) + 1) + "\n" + "\n".join(f"| {n} | " + " | ".join(map(str, row)) + " |"
                                                                   for n, row in zip(names, matrix)), step)
    rows = ["| gold | predicted |", "|---|---|"]
    for x, pred in list(zip(sentences, result["pred"]))[:probes]:
        rows.append(f"| {marked(x.words, x.tags)} | {marked(x.words, pred)} |")
    writer.add_text("Entities/probes", "\n".join(rows), step)


def marked(words: list[str], tags: list[str]) -> str:
    """Words with their entities in brackets: [PER Ann Lee] met [LOC Paris]."""
    out, entities = list(words), ner.entities(tags)
    for kind, first, last in reversed(entities):
        out[first:last + 1] = [f"[{kind} " + " ".join(out[first:last + 1]) + "]"]
    return " ".join(out).replace("|", "\\|")


def print_report(result: dict, split: str, best_epoch: int, model_dir: str, wall: float) -> None:
    print("\n" + "-" * 64)
    print(f"{split} set, best epoch {best_epoch} by valid entity F1:")
    print(f"  entity precision {result['precision']:.4f}  recall {result['recall']:.4f}  F1 {result['f1']:.4f}  "
          f"token accuracy {result['accuracy']:.4f}")
    width = max(8, *(len(k) for k in result["per_type"]))
    print(f"  {pad('type', width)}  precision  recall  f1      support")
    for kind, x in result["per_type"].items():
        print(f"  {pad(kind, width)}  {x['precision']:9.4f}  {x['recall']:6.4f}  {x['f1']:6.4f}  {x['support']:7d}")
    print(f"model: {model_dir}  ({wall:.0f}s in all)")
    print(f"tag new text: python {os.path.relpath(__file__)} predict --model {model_dir} \"some text\"")


# ----------------------------------------------------------------------------- which runs: one, or side by side


def train_command(s: Settings) -> int:
    device = setup_device(s.device)
    check_precision(s.precision, device)
    if s.run_name and os.path.lexists(os.path.join(s.out_dir, check_run_name(s.run_name))):
        raise UsageError(f"{os.path.join(s.out_dir, s.run_name)} exists (another run's folder; nothing in it was "
                         "touched): choose another --run-name")
    task = load_tagging_task(s)  # every check before anything is written
    if s.compare:
        pretrained = s.init or newest_pretrained(s.out_dir)
        if pretrained is None or pretrained == "scratch":
            raise UsageError("--compare fine-tunes a pretrained model next to the scratch baseline: pretrain one "
                             "(python train_mlm.py) or give it with --init")
        inits, baseline_of = {"pretrained": pretrained, "scratch": "scratch"}, checkpoint_dir(pretrained)
    else:
        inits, baseline_of = {"": choose_init(s)}, None
    stop = StopSignal(announce=False)
    stop.install()
    with RunFolder.create(s.out_dir, s.run_name or f"ner-{task.name}-{time.strftime('%Y%m%d-%H%M%S')}",
                          numbered=not s.run_name) as run:
        try:
            results = {name: fine_tune(s, task, init, os.path.join(run.path, name) if name else run.path, device,
                                       s.seed, stop, baseline_of) for name, init in inits.items()}
            stop.raise_if_stopped()
        finally:
            stop.restore()
            if any(os.path.isfile(os.path.join(run.path, name, "model", "labels.json")) for name in inits):
                run.keep()
        if s.compare:
            write_json(os.path.join(run.path, "results.json"), compare(results, run.path))
    return 0


def compare(results: dict[str, dict], run_dir: str) -> dict:
    p, r = results["pretrained"], results["scratch"]
    print("\n" + "=" * 64)
    print(f"pretrained vs scratch, the same recipe, seed and data ({p['split']} set):")
    print(f"  {'':<22}{'pretrained':>12}{'scratch':>12}{'difference':>12}")
    for k in ("f1", "precision", "recall", "accuracy"):
        name = "token accuracy" if k == "accuracy" else f"entity {k}"
        print(f"  {name:<22}{p[k]:12.4f}{r[k]:12.4f}{p[k] - r[k]:+12.4f}")
    print(f"TensorBoard: tensorboard --logdir {run_dir} (the runs pretrained/ and scratch/ overlay)")
    return {"pretrained": p, "scratch": r, "difference": {k: p[k] - r[k] for k in ("f1", "precision", "recall")}}


# ----------------------------------------------------------------------------- predict


def predict_command(args: argparse.Namespace) -> int:
    model_dir = args.model if os.path.isfile(os.path.join(args.model, "labels.json")) else os.path.join(args.model,
                                                                                                         "model")
    if not os.path.isdir(args.model):
        raise CheckpointError(f"{args.model}: no such folder")
    if not os.path.isfile(os.path.join(model_dir, "labels.json")):
        raise CheckpointError(f"{args.model}: not a finetune_ner.py model (no labels.json in it or in its model/)")
    labels = ner.load_labels(os.path.join(model_dir, "labels.json"))
    tokenizer = load_tokenizer(model_dir)
    check_vocab(model_dir, tokenizer)
    device = setup_device(args.device)
    model = BertForTokenClassification.from_pretrained(model_dir).to(device)
    id2label = model.config.id2label or {}
    if model.config.num_labels != len(labels) or [id2label.get(i) for i in range(len(labels))] != labels:
        raise CheckpointError(f"{model_dir}: config.json's {model.config.num_labels} labels are not labels.json's "
                              f"{len(labels)} ({', '.join(labels[:6])}...): the tag set does not belong to this model")
    texts = list(args.texts)
    if args.file:
        if args.file != "-" and not os.path.isfile(args.file):
            raise DataError(f"{args.file}: no such file")
        with open(args.file, "rb") if args.file != "-" else contextlib.nullcontext(sys.stdin.buffer) as f:
            texts += [t for t in decode_text(f.read(), args.file if args.file != "-" else "standard input")
                      .split("\n") if t.strip()]
    if not texts:
        raise UsageError("nothing to tag: give texts as arguments, or --file FILE (--file - reads standard input)")
    words = [ner.split_words(t) for t in texts]
    sentences = [ner.Sentence(w, [], offsets=o, text=t) for (w, o), t in zip(words, texts)]
    wins, _ = ner.windows(sentences, tokenizer, {}, window_length(args.max_length, model_dir, model.config))
    log_probs, _ = window_log_probs(model, wins, args.batch_size, tokenizer.pad_token_id, device,
                                    contextlib.nullcontext())
    scores = ner.word_scores(sentences, wins, log_probs)
    for x, lp, tags in zip(sentences, scores, decode(scores, labels, args.decode)):
        probs = np.exp(lp[np.arange(len(tags)), [labels.index(t) for t in tags]]) if tags else np.zeros(0)
        found = [{"text": x.text[a:b], "type": kind, "start": a, "end": b, "score": round(score, 4)}
                 for kind, a, b, score in ner.spans(x.offsets, tags, probs)]
        if args.json:
            print(json.dumps({"text": x.text, "entities": found}, ensure_ascii=False))
        else:
            print(x.text)
            for e in found:
                print(f"  {e['type']}\t{e['start']}-{e['end']}\t{e['score']:.4f}\t{e['text']}")
    return 0


# ----------------------------------------------------------------------------- command line


def train_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="finetune_ner.py", description=__doc__.split("\n\n")[0].strip()
                       + " Run `finetune_ner.py predict --help` for tagging new text.", formatter_class=HelpFormatter)
    g = p.add_argument_group("data (default: the embedded demo task)")
    g.add_argument("--train", metavar="FILE", help="tagged training file: CoNLL columns (word first, tag last; a "
                   "blank line between sentences), a character a line, or .jsonl (tokens/tags, or text/entities)")
    g.add_argument("--valid", metavar="FILE", help="validation file (default: --valid-fraction of --train)")
    g.add_argument("--test", metavar="FILE", help="test file for the final report (default: none, report on valid)")
    g.add_argument("--scheme", choices=ner.SCHEMES, help="the files' tag scheme (default: detected: BIOES when E-/S- "
                   "tags occur, IOB1 when I- begins entities and B- never follows O, else BIO)")
    g.add_argument("--tag-column", type=int, default=-1, help="the column of the tag in CoNLL files (0 is the word)")
    g.add_argument("--valid-fraction", type=float, default=0.1, help="share of --train held out when no --valid")
    g.add_argument("--max-length", type=int,
                   help="word pieces per window, [CLS] and [SEP] included (default: the length the model was "
                        f"pretrained at, at most {WINDOW}: a train_mlm.py model's 64; longer sentences are read in "
                        "overlapping windows, nothing is cut)")
    g.add_argument("--stride", type=int, help="pieces between the starts of a long sentence's windows "
                   "(default: half a window)")
    g.add_argument("--cache-dir", default=default_cache_dir(), help="the demo task and trained vocabularies")
    g = p.add_argument_group("model")
    g.add_argument("--init", metavar="PATH|scratch", help="a Hugging Face BERT directory, a train_mlm.py run "
                   "directory (its final/), or 'scratch' (default: the newest runs/*/final, else scratch)")
    g.add_argument("--config", choices=list(PRESETS), help="model size for --init scratch (default: the newest "
                   "train_mlm.py run's, else tiny)")
    g.add_argument("--vocab", metavar="FILE", help="vocab.txt for --init scratch (default: the newest train_mlm.py "
                   "run's, else one trained on the train split)")
    g.add_argument("--vocab-size", type=int, default=8192, help="vocabulary to train for --init scratch")
    g = p.add_argument_group("optimisation (BERT's recipe)")
    g.add_argument("--epochs", type=int, default=3, help="passes over the training set")
    g.add_argument("--batch-size", type=int, default=32, help="windows per step")
    g.add_argument("--lr", type=float, help="peak learning rate (default by hidden size, as finetune_cls.py)")
    g.add_argument("--warmup", type=float, default=0.1, help="share of the steps with linear warmup")
    g.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay")
    g.add_argument("--dropout", type=float, default=0.1,
                   help="hidden and attention dropout while fine-tuning (BERT's), whatever the model was pretrained with")
    g.add_argument("--clip", type=float, default=1.0, help="gradient-norm clipping threshold")
    g.add_argument("--bucket-size", type=int, default=100, help="length bucketing: batches sorted by length in "
                   "runs of this many (0: off)")
    g.add_argument("--decode", choices=["viterbi", "argmax"], default="viterbi",
                   help="viterbi: the most probable valid BIO sequence; argmax: each word's most probable tag")
    g.add_argument("--compare", action="store_true", help="the pretrained model and the scratch baseline alike")
    g = p.add_argument_group("logging and system")
    g.add_argument("--out-dir", default="runs", help="where runs live (train_mlm.py's are searched for --init)")
    g.add_argument("--run-name", help="this run's folder under --out-dir (default: ner-<task>-<time>)")
    g.add_argument("--log-interval", type=int, default=10, help="steps between train scalars")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--seed", type=int, default=42, help="seed for init, shuffling and dropout")
    g.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")
    g.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"], help="bf16/fp16 autocast")
    return p


def predict_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="finetune_ner.py predict", description="Tag the entities of new text with a model "
                       "saved by finetune_ner.py: each entity's text, type, character offsets and score.",
                       formatter_class=HelpFormatter)
    p.add_argument("texts", nargs="*", help="texts to tag")
    p.add_argument("--model", required=True, help="the run's model/ directory (or the run directory)")
    p.add_argument("--file", help="a file with one text per line ('-': standard input)")
    p.add_argument("--json", action="store_true", help="one JSON object per text: its entities")
    p.add_argument("--decode", choices=["viterbi", "argmax"], default="viterbi", help="as for training")
    p.add_argument("--batch-size", type=int, default=64, help="windows per forward pass")
    p.add_argument("--max-length", type=int, help="word pieces per window (default: the model's, as it was trained)")
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")
    return p


def check_train_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    problem = not_positive(vars(args), ("epochs", "batch_size", "log_interval")) \
        or vocab_size_problem(args.vocab_size)
    if problem:
        p.error(problem)
    if args.max_length is not None and args.max_length < 4 or args.stride is not None and \
            not 0 < args.stride <= (args.max_length or WINDOW) - 2:
        p.error("--max-length must be at least 4 and --stride in [1, --max-length - 2]")
    problem = fine_tuning_problem(vars(args))
    if problem:
        p.error(problem)
    if args.vocab and args.init != "scratch":
        p.error("--vocab is for --init scratch: a checkpoint brings its own vocab.txt")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["predict"]:
        return run_predict(argv[1:], predict_parser(), predict_command, bad_input=(DataError, CheckpointError))
    p = train_parser()
    args = p.parse_args(argv)
    check_train_flags(p, args)
    return run_cli(lambda: train_command(Settings(**vars(args))), bad_input=(DataError, CheckpointError),
                   sigterm=True)


if __name__ == "__main__":
    sys.exit(main())
