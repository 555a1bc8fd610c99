"""
Fine-tune a pretrained BERT for text classification, and watch it in TensorBoard.

    python finetune_cls.py                                   # newest train_mlm.py model, embedded task
    python finetune_cls.py --init scratch                    # the same, from random weights (baseline)
    python finetune_cls.py --compare                         # both side by side: did pretraining help?
    python finetune_cls.py --compare --per-class 16 64 256 all --seeds 1 2 3   # ... where labels are scarce
    python finetune_cls.py --train train.tsv --valid dev.tsv --test test.tsv --init ~/bert-base-uncased
    python finetune_cls.py --task sst2                      # a GLUE task, downloaded once and cached
    python finetune_cls.py predict --model runs/cls-docsource-.../model "Return a new tensor."

The recipe is BERT's (Devlin et al., 2018, appendix A.3): AdamW, lr 2e-5..5e-5, 10% linear warmup then
linear decay, 3 epochs, batch 32, max length 128, gradient clipping. Batches are padded to their longest
sequence, with length bucketing, instead of always to 128.

Everything a run makes lands in runs/cls-<task>-<time>/ (<task>: docsource, the GLUE task, or the name of your
--train file, as the first line of the run says): TensorBoard events, model/ (the best epoch by
the validation metric, in the Hugging Face layout, plus labels.json) and results.json. The "cls-" prefix
and model/ (never final/) keep fine-tuning runs apart from train_mlm.py's pretraining runs. --compare
puts the two runs in pretrained/ and scratch/ (sibling TensorBoard runs, so their curves overlay) and
the comparison in results.json; a sweep over --per-class and --seeds adds curve/, test accuracy against
the number of labels per class.

The embedded default task, "docsource", is real text with honest labels: each sentence of the
documentation that ships with Python, numpy and torch (data.py's default corpus) labelled by where it
comes from: Python's reference manual, a standard-library docstring, a numpy docstring or a torch
docstring. Splits are by document (topic or module), so no test sentence shares a page with training.

Reading order: fine_tune() is one run on one page; train_command() chooses the runs (one, side by side,
or a sweep). The tasks are in tasks.py, the choice of initial weights in pretrained.py, the shared
training utilities in training.py and the TensorBoard pictures in visuals.py.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import math
import os
import sys
import time
from typing import Iterator, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from cli import (ArgumentParser, DataError, HelpFormatter, UsageError, display_width, not_positive, pad, run_cli,
                 run_predict)
from data import LabelMap, classification_batches, encode_classification
from files import RunFolder, write_folder, write_json
from model import PRESETS, BertForSequenceClassification, CheckpointError
from pretrained import (check_vocab, checkpoint_dir, choose_init, default_lr, initial_model, load_tokenizer,
                        newest_pretrained, tokenizer_settings, warn_if_misread)
from tasks import GLUE_BASE_URL, GLUE_TASKS, Task, load_task, per_class_subset
from token_cache import default_cache_dir
from tokenization import BertTokenizer, decode_text, vocab_size_problem
from training import (Settings, StopSignal, Trainer, check_precision, fine_tuning_problem, seed_everything,
                      setup_device)
from visuals import log_projector, log_settings, log_validation, summary_writer

METRICS = {"acc": "accuracy", "f1": "macro-F1", "mcc": "MCC"}


# ----------------------------------------------------------------------------- one fine-tuning run


def fine_tune(s: Settings, task: Task, init: str, run_dir: str, device: torch.device, seed: int,
              stop: StopSignal, baseline_of: str | None = None, min_steps: int = 0) -> dict:
    """Fine-tune one model (a checkpoint, or 'scratch' of the size of the checkpoint `baseline_of`) on the
    task, for --epochs or at least min_steps; the best epoch by the valid metric is saved to run_dir/model
    and reported on the test split. Returns what run_dir/results.json holds."""
    stop.raise_if_stopped()  # between the runs of a comparison or a sweep
    t_start = time.time()
    seed_everything(seed)
    labels = LabelMap.from_examples(task.train)
    model, tokenizer, init, init_note = initial_model(s, init, task.train_texts(), labels, baseline_of)
    max_length = min(s.max_length, model.config.max_position_embeddings)
    data = Splits(*(encode_classification(split, tokenizer, labels, max_length)
                    for split in (task.train, task.valid, task.test)))
    steps_per_epoch = math.ceil(len(data.train) / s.batch_size)
    epochs = max(s.epochs, math.ceil(min_steps / steps_per_epoch))  # a few labels: more passes
    eval_every = math.ceil(epochs / max(s.epochs, 10))  # ... but at most ~10 evaluations
    trainer = Trainer.start(model.to(device), s, seed, epochs * steps_per_epoch, default_lr(model.config), device,
                            stop)
    print_setup(s, task, labels, init_note, model, tokenizer, trainer.lr, epochs, steps_per_epoch, device)
    warn_about_setup(s, task, labels, tokenizer, init, baseline_of, max_length, data.train, epochs * steps_per_epoch)
    trainer.writer = writer = open_writer(run_dir, s, seed, task, init_note)
    model_dir = os.path.join(run_dir, "model")

    best, best_epoch, best_result, history = -math.inf, 0, None, []
    for epoch in range(1, epochs + 1):
        train_loss = trainer.train_epoch(train_batches(data.train, s, seed + epoch, max_length, tokenizer.pad_token_id),
                                         steps_per_epoch, len(data.train), epoch)
        if epoch % eval_every and epoch != epochs:
            continue
        result = evaluate(model, data.valid, s.batch_size, tokenizer.pad_token_id, device, trainer.autocast)
        stop.raise_if_stopped()
        print(f"Epoch {epoch}: Train Loss = {train_loss:.4f}, Valid Loss = {result['loss']:.4f}, "
              f"Valid Acc = {result['acc']:.4f}", flush=True)
        log_validation(writer, result, task.valid, labels.labels, trainer.step)
        history.append({"epoch": epoch, "train_loss": train_loss,
                        **{f"valid_{k}": float(result[k]) for k in ("loss", "acc", "f1", "mcc")}})
        if result[task.metric] > best:
            best, best_epoch, best_result = result[task.metric], epoch, result
            save_model(model, tokenizer, labels, model_dir)
        elif s.patience and (epoch - best_epoch) // eval_every >= s.patience:
            print(f"early stopping: valid {task.metric} has not improved for {s.patience} evaluations")
            break
    log_projector(writer, best_result, task.valid, labels.labels, trainer.step)

    # --- the best epoch on the test set
    model = BertForSequenceClassification.from_pretrained(model_dir).to(device)
    final_split, final_examples = ("test", data.test) if data.test else ("valid", data.valid)
    result = evaluate(model, final_examples, s.batch_size, tokenizer.pad_token_id, device, trainer.autocast)
    wall = time.time() - t_start
    print_report(result, labels.labels, final_split, best_epoch, task.metric, model_dir, wall)
    results = {"task": task.info, "init": init_note, "labels": labels.labels, "best_epoch": best_epoch,
               "epochs_run": history[-1]["epoch"], "metric": task.metric, "history": history, "split": final_split,
               **{k: float(result[k]) for k in ("loss", "acc", "f1", "mcc")}, "best_valid": float(best),
               "confusion_matrix": result["cm"].tolist(), "wall_seconds": round(wall, 1)}
    write_json(os.path.join(run_dir, "results.json"), results)
    hparams = {"task": task.name, "init": init, "lr": trainer.lr, "epochs": epochs, "batch_size": s.batch_size,
               "max_length": max_length, "precision": s.precision, "seed": seed, "train_examples": len(data.train)}
    writer.add_hparams(hparams, {f"hparam/{final_split}_{k}": float(result[k]) for k in ("acc", "f1", "mcc")}
                       | {f"hparam/best_valid_{task.metric}": float(best)}, name="hparams")
    writer.close()
    return results


class Splits(NamedTuple):
    """A task's encoded examples; test is empty when the task has none."""
    train: list[dict]
    valid: list[dict]
    test: list[dict]


def print_setup(s: Settings, task: Task, labels: LabelMap, init_note: str, model, tokenizer, lr: float, epochs: int,
                steps_per_epoch: int, device) -> None:
    n_params = sum(p.numel() for p in model.parameters())
    print(f"task: {task.name}, {len(labels)} classes ({', '.join(labels.labels)}); "
          f"{len(task.train)} train, {len(task.valid)} valid, {len(task.test)} test examples")
    print(f"init: {init_note}")
    print(f"model: {model.config.num_hidden_layers} layers, hidden {model.config.hidden_size}, "
          f"{n_params / 1e6:.2f}M parameters, vocab {len(tokenizer)}; lr {lr:g}, {epochs} epochs x "
          f"{steps_per_epoch} steps of {s.batch_size}; device {device}, {s.precision}")


def warn_if_longer_than_pretrained(init: str, max_length: int, train_set: list[dict]) -> None:
    pretrained_length = None if init == "scratch" else (tokenizer_settings(init) or {}).get("model_max_length")
    if pretrained_length and max_length > pretrained_length:
        longer = sum(len(e["input_ids"]) > pretrained_length for e in train_set)
        if longer:
            print(f"note: {init} was pretrained on sequences of at most {pretrained_length} tokens; {longer} of "
                  f"{len(train_set)} train examples are longer, and their positions from {pretrained_length} on "
                  f"start untrained (--max-length {pretrained_length} truncates them instead)")


def train_batches(train_set: list[dict], s: Settings, seed: int, max_length: int, pad_token_id: int) -> Iterator[dict]:
    """An epoch of the train split: shuffled, length-bucketed batches (each padded to --max-length with
    --pad-to-max-length, as the original)."""
    for batch in classification_batches(train_set, s.batch_size, pad_token_id, shuffle=True, seed=seed,
                                        bucket_size=s.bucket_size or None):
        yield pad_to(batch, max_length, pad_token_id) if s.pad_to_max_length else batch


def warn_about_setup(s: Settings, task: Task, labels: LabelMap, tokenizer: BertTokenizer, init: str,
                     baseline_of: str | None, max_length: int, train_set: list[dict], steps: int) -> None:
    """What would make this run learn little, said before it starts: a vocabulary that misreads the task,
    examples longer than the pretraining, too few steps or examples."""
    warn_if_misread(tokenizer, task.train_texts(), init if init != "scratch" else tokenizer.vocab_file,
                    picked=s.init is None or (init == "scratch" and not s.vocab and baseline_of is None))
    warn_if_longer_than_pretrained(init, max_length, train_set)
    warn_if_too_little(steps, task.train, labels)


# Below these a run cannot learn much, whatever the model: the embedded task's default run takes 300 steps of
# 800 examples a class; --per-class sweeps raise a subset's steps to 150 (--min-steps).
FEW_STEPS, FEW_EXAMPLES = 50, 8


def warn_if_too_little(steps: int, train: list, labels: LabelMap) -> None:
    per_class = min(sum(e.label == label for e in train) for label in labels.labels)
    short = [f"{steps} optimizer steps (give more --epochs or --min-steps; at least {FEW_STEPS})"] \
        if steps < FEW_STEPS else []
    short += [f"{per_class} train examples in the smallest class (at least {FEW_EXAMPLES}: give more examples)"] \
        if per_class < FEW_EXAMPLES else []
    if short:
        print(f"warning: too little to learn much: {' and '.join(short)}", flush=True)


def open_writer(run_dir: str, s: Settings, seed: int, task: Task, init_note: str):
    writer = summary_writer(run_dir)
    print(f"logs: {run_dir}")
    log_settings(writer, {**s.as_dict(), "seed": seed})  # a sweep's seed for this run
    writer.add_text("Run/task", "    " + json.dumps(task.info, indent=1).replace("\n", "\n    ") +
                    f"\n\ninit: {init_note}", 0)
    return writer


def pad_to(batch: dict[str, torch.Tensor], length: int, pad_token_id: int) -> dict[str, torch.Tensor]:
    """Pad a batch to a fixed length (--pad-to-max-length: the original's fixed-shape batches)."""
    extra = length - batch["input_ids"].size(1)
    return {k: v if v.dim() == 1 else F.pad(v, (0, extra), value=pad_token_id if k == "input_ids" else 0)
            for k, v in batch.items()}


@torch.no_grad()
def predict(model, encoded: list[dict], batch_size: int, pad_token_id: int, device, autocast) -> dict:
    """Class probabilities, pooled [CLS] vectors and the mean loss of encoded examples, in their order.
    Examples are sorted by length for batching (little padding), then put back in place."""
    model.eval()
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]["input_ids"]))
    batches = classification_batches([encoded[i] for i in order], batch_size, pad_token_id,
                                     shuffle=False, seed=0, bucket_size=None)
    probs = np.zeros((len(encoded), model.config.num_labels), dtype=np.float32)
    pooled = np.zeros((len(encoded), model.config.hidden_size), dtype=np.float32)
    loss_sum = 0.0
    for start, batch in zip(range(0, len(order), batch_size), batches):
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast:
            # The classifier's own steps, to keep the pooled [CLS] vector it sees (for the projector).
            _, cls = model.bert(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
            logits = model.classifier(model.dropout(cls)).float()
        loss_sum += F.cross_entropy(logits, batch["labels"], reduction="sum").item()
        index = order[start:start + batch_size]
        probs[index] = logits.softmax(-1).cpu().numpy()
        pooled[index] = cls.float().cpu().numpy()
    model.train()
    return {"probs": probs, "pooled": pooled, "loss": loss_sum / len(encoded)}


def evaluate(model, encoded: list[dict], batch_size: int, pad_token_id: int, device, autocast) -> dict:
    """predict(), with the predicted labels, the confusion matrix and the metrics against the true labels."""
    out = predict(model, encoded, batch_size, pad_token_id, device, autocast)
    out["labels"] = np.array([e["label"] for e in encoded])
    out["preds"] = out["probs"].argmax(1)
    out["cm"] = confusion_matrix(out["labels"], out["preds"], out["probs"].shape[1])
    out.update(classification_metrics(out["cm"]))
    return out


def save_model(model, tokenizer: BertTokenizer, labels: LabelMap, path: str) -> None:
    """The Hugging Face layout (config.json with id2label, model.safetensors, vocab.txt,
    tokenizer_config.json) plus labels.json, written beside `path` and then moved into place: an
    interrupted save leaves the previous model whole, never a folder with some of the files."""
    settings = {"do_lower_case": tokenizer.do_lower_case, "tokenizer_class": "BertTokenizer"}

    def fill(folder: str) -> None:
        model.save_pretrained(folder, vocab_file=tokenizer.vocab_file)
        write_json(os.path.join(folder, "tokenizer_config.json"), settings)
        labels.save(os.path.join(folder, "labels.json"))
    write_folder(path, fill)


def print_report(result: dict, labels: list[str], split: str, best_epoch: int, metric: str,
                 model_dir: str, wall: float) -> None:
    cm = result["cm"]
    if split == "valid":
        print("no test set: the report below is on the validation set, which also picked the best epoch "
              "(an optimistic estimate)")
    print("\n" + "-" * 64)
    print(f"{split} set ({int(cm.sum())} examples), best epoch {best_epoch} by valid {metric}:")
    print(f"  accuracy {result['acc']:.4f}  macro-F1 {result['f1']:.4f}  MCC {result['mcc']:.4f}  "
          f"loss {result['loss']:.4f}")
    width = max(8, *map(display_width, labels))  # a Chinese label takes two columns a character
    print(f"  {pad('class', width)}  precision  recall  f1      support")
    for c, label in enumerate(labels):
        tp, pred, true = cm[c, c], cm[:, c].sum(), cm[c].sum()
        p, r = tp / max(pred, 1), tp / max(true, 1)
        print(f"  {pad(label, width)}  {p:9.4f}  {r:6.4f}  {2 * p * r / max(p + r, 1e-12):6.4f}  {int(true):7d}")
    print("  confusion matrix (rows: true, columns: predicted):")
    for label, row in zip(labels, cm):
        print(f"  {pad(label, width)}  " + " ".join(f"{int(v):6d}" for v in row))
    majority = cm.sum(1).max() / cm.sum()
    if result["acc"] <= majority + 0.01:
        print(f"warning: accuracy {result['acc']:.4f} is chance: always answering {labels[cm.sum(1).argmax()]!r}, the "
              f"commonest class of this split, scores {majority:.4f}. The model has learned nothing usable")
    print(f"model: {model_dir}  ({wall:.0f}s in all)")
    print(f"classify new text: python {os.path.relpath(__file__)} predict --model {model_dir} \"some text\"")


# ----------------------------------------------------------------------------- which runs: one, side by side, a sweep


def train_command(s: Settings) -> int:
    device = setup_device(s.device)
    check_precision(s.precision, device)
    if s.run_name and os.path.lexists(os.path.join(s.out_dir, s.run_name)):  # said before the data is read
        raise UsageError(f"{os.path.join(s.out_dir, s.run_name)} exists (another run's folder; nothing in it was "
                         "touched): choose another --run-name")
    if s.vocab and (s.init != "scratch" or s.compare):
        raise UsageError("--vocab is for --init scratch: a checkpoint brings its own vocab.txt")
    if s.config and s.compare:
        raise UsageError("--config is for --init scratch: with --compare the baseline takes the pretrained "
                         "model's size")
    task = load_task(s)  # every check before anything is written
    if s.compare:  # the baseline takes the size and vocabulary of the model it is compared with
        pretrained = pretrained_init(s)
        inits, baseline_of = {"pretrained": pretrained, "scratch": "scratch"}, checkpoint_dir(pretrained)
    else:
        inits, baseline_of = {"": choose_init(s)}, None
    runs = label_subsets(s, task)
    stop = StopSignal(announce=False)  # Ctrl-C / SIGTERM: noted, and acted on between steps
    stop.install()
    # The folder is claimed (a generated name gets -1, -2 ... when another run took it in the same second),
    # and removed again if the runs end before any model is saved in it.
    with RunFolder.create(s.out_dir, s.run_name or f"cls-{task.name}-{time.strftime('%Y%m%d-%H%M%S')}",
                          numbered=not s.run_name) as run:
        try:
            if len(runs) > 1:
                sweep(s, runs, inits, baseline_of, run.path, device, stop)
                return 0
            (one,) = runs
            results = {name: fine_tune(s, one.task, init, os.path.join(run.path, name) if name else run.path,
                                       device, one.seed, stop, baseline_of, one.min_steps)
                       for name, init in inits.items()}
            stop.raise_if_stopped()  # a signal during the last run's report: it finished, but the exit says so
        finally:
            stop.restore()
            if glob.glob(os.path.join(glob.escape(run.path), "**", "labels.json"), recursive=True):
                run.keep()  # a model was saved: the folder stays, even if a later run of a sweep was stopped
        if s.compare:
            write_json(os.path.join(run.path, "results.json"), compare(results, run.path))
    return 0


class LabelRun(NamedTuple):
    """One run of a learning curve: this many labels per class, this seed, the task with that train split,
    and the fewest steps it trains."""
    per_class: int
    seed: int
    task: Task
    min_steps: int


def label_subsets(s: Settings, task: Task) -> list[LabelRun]:
    """(labels per class, seed, the task with that train split, its minimum of steps) for every --per-class
    N and seed. N at least a class's size keeps the whole class: an N that gives the same split as an
    earlier one is skipped, and said. A subsampled split trains for at least --min-steps (default 150)."""
    runs, seen = [], set()
    for n in s.per_class:
        for seed in s.seeds:
            train = per_class_subset(task.train, n, seed) if n else task.train
            per_class = max(sum(e.label == label for e in train) for label in {e.label for e in train})
            if (per_class, seed) in seen:
                print(f"--per-class {n or 'all'}: the same train split as an earlier value ({per_class} per class, "
                      f"seed {seed}); skipped")
                continue
            seen.add((per_class, seed))
            subsampled = len(train) < len(task.train)
            min_steps = s.min_steps if s.min_steps is not None else 150 if subsampled else 0
            runs.append(LabelRun(per_class, seed, task.with_train(train) if subsampled else task, min_steps))
    return runs


def pretrained_init(s: Settings) -> str:
    """The pretrained side of --compare: --init, else the newest train_mlm.py run's export."""
    if s.init == "scratch":
        raise UsageError("--compare fine-tunes a pretrained model next to the scratch baseline: give the model "
                         "as --init (or nothing, for the newest train_mlm.py run), not 'scratch'")
    init = s.init or newest_pretrained(s.out_dir)
    if init is None:
        raise CheckpointError(f"--compare: no pretrained model under {s.out_dir}/ (no */final/config.json); "
                              "run `python train_mlm.py` first, or give one with --init")
    return init


def compare(results: dict[str, dict], run_dir: str) -> dict:
    """The two-column table of a side-by-side run: test metrics of pretrained and scratch, the difference,
    and which is better on valid (the split that picks epochs) and on test."""
    p, r = results["pretrained"], results["scratch"]
    split = p["split"]
    print("\n" + "=" * 64)
    print(f"pretrained vs scratch, the same recipe, seed and data ({split} set):")
    print(f"  {'':<22}{'pretrained':>12}{'scratch':>12}{'difference':>12}")
    for k, name in METRICS.items():
        print(f"  {name:<22}{p[k]:12.4f}{r[k]:12.4f}{p[k] - r[k]:+12.4f}")
    print(f"  {'best valid ' + p['metric']:<22}{p['best_valid']:12.4f}{r['best_valid']:12.4f}"
          f"{p['best_valid'] - r['best_valid']:+12.4f}")
    print(f"  {'best epoch':<22}{p['best_epoch']:12d}{r['best_epoch']:12d}")
    print(f"TensorBoard: tensorboard --logdir {run_dir} (the runs pretrained/ and scratch/ overlay)")
    return {"pretrained": p, "scratch": r, "split": split,
            "difference": {k: p[k] - r[k] for k in METRICS},
            # the metric that picked the epochs, on valid and on the final split: do they rank the two alike?
            "valid_agrees_with_test": (p["best_valid"] > r["best_valid"]) == (p[p["metric"]] > r[r["metric"]])}


def sweep(s: Settings, runs: list[LabelRun], inits: dict[str, str], baseline_of: str | None, run_dir: str, device,
          stop: StopSignal) -> None:
    """A learning curve over the number of labels: every --per-class N at every seed, for each init. The
    test accuracy (valid, for a task without a test split) against N goes to TensorBoard (curve/<init>,
    step N: the curves overlay on one chart) and, as a table with every seed and the mean, to results.json."""
    curve: dict[str, dict[int, dict[int, dict]]] = {name or "model": {} for name in inits}
    for per_class, seed, subset, min_steps in runs:
        for name, init in inits.items():
            print(f"\n=== {name or init}: {per_class} labels per class, seed {seed}")
            r = fine_tune(s, subset, init, os.path.join(run_dir, f"n{per_class}-seed{seed}", name), device, seed,
                          stop, baseline_of, min_steps)
            curve[name or "model"].setdefault(per_class, {})[seed] = {**{k: r[k] for k in METRICS},
                                                                      "best_valid": r["best_valid"]}
    split = r["split"]
    table = curve_table(curve, "acc")
    for name, points in curve.items():
        writer = summary_writer(os.path.join(run_dir, "curve", name))
        for n, by_seed in sorted(points.items()):
            for k in METRICS:
                writer.add_scalar(f"Transfer/{split}_{k}", float(np.mean([m[k] for m in by_seed.values()])), n)
            for seed, m in by_seed.items():
                writer.add_scalar(f"Transfer/{split}_acc_seed{seed}", m["acc"], n)
        writer.close()
    write_json(os.path.join(run_dir, "results.json"), {"task": runs[0].task.info, "split": split, "seeds": s.seeds,
                                                       "curve": table, "runs": {k: {str(n): v for n, v in p.items()}
                                                                                for k, p in curve.items()}})
    print_curve(table, split, run_dir)


def curve_table(curve: dict, metric: str) -> list[dict]:
    """One row per N: each init's mean and per-seed metric, and (side by side) the difference."""
    rows = []
    for n in sorted(next(iter(curve.values()))):
        row: dict = {"per_class": n}
        for name, points in curve.items():
            values = [points[n][seed][metric] for seed in sorted(points[n])]
            row[name] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "seeds": values}
        if {"pretrained", "scratch"} <= set(curve):
            diffs = [a - b for a, b in zip(row["pretrained"]["seeds"], row["scratch"]["seeds"])]
            row["difference"] = {"mean": float(np.mean(diffs)), "seeds": diffs,
                                 "pretrained_better": sum(d > 0 for d in diffs)}
        rows.append(row)
    return rows


def print_curve(table: list[dict], split: str, run_dir: str) -> None:
    names = [k for k in table[0] if k not in ("per_class", "difference")]
    print("\n" + "=" * 64)
    print(f"{split} accuracy by labels per class (mean over seeds ± std):")
    print(f"  {'labels/class':>12}" + "".join(f"{name:>18}" for name in names)
          + (f"{'difference':>12}{'wins':>6}" if "difference" in table[0] else ""))
    for row in table:
        line = f"  {row['per_class']:>12}" + "".join(
            f"{row[name]['mean']:>11.4f} ± {row[name]['std']:.3f}" for name in names)
        if "difference" in row:
            d = row["difference"]
            line += f"{d['mean']:>+12.4f}{d['pretrained_better']:>4}/{len(d['seeds'])}"
        print(line)
    print(f"TensorBoard: tensorboard --logdir {os.path.join(run_dir, 'curve')} (Transfer/{split}_acc, "
          "step = labels per class)")


# ----------------------------------------------------------------------------- metrics


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """cm[i, j] = examples of true class i predicted as j."""
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def classification_metrics(cm: np.ndarray) -> dict[str, float]:
    """Accuracy, macro-F1 (over the classes present in labels or predictions) and Matthews correlation
    (the multi-class R_K of Gorodkin 2004, which is MCC for two classes)."""
    cm = cm.astype(np.float64)
    tp, true, pred, n = np.diag(cm), cm.sum(1), cm.sum(0), cm.sum()
    present = (true + pred) > 0
    f1 = np.divide(2 * tp, true + pred, out=np.zeros_like(tp), where=present)
    cov = np.sqrt((n * n - pred @ pred) * (n * n - true @ true))
    return {"acc": tp.sum() / n, "f1": f1[present].mean(),
            "mcc": (tp.sum() * n - true @ pred) / cov if cov > 0 else 0.0}


# ----------------------------------------------------------------------------- predict


def fine_tuned_model(path: str) -> str:
    """predict --model PATH: a fine-tuned model's folder, or a run folder holding one (its model/). A folder
    of several (a --compare run, a sweep) names them; anything else says what it is not."""
    if not os.path.isdir(path):
        raise CheckpointError(f"{path}: no such folder")
    for folder in (path, os.path.join(path, "model")):
        if os.path.isfile(os.path.join(folder, "labels.json")):
            return folder
    inside = sorted(os.path.dirname(p) for p in glob.glob(os.path.join(glob.escape(path), "**", "model", "labels.json"),
                                                          recursive=True))
    if inside:
        raise CheckpointError(f"{path} holds {len(inside)} fine-tuned models; give one with --model: "
                              + ", ".join(inside[:4]) + (", ..." if len(inside) > 4 else ""))
    raise CheckpointError(f"{path}: not a fine-tuned model (no labels.json in it or in its model/); give the model/ "
                          "folder of a finetune_cls.py run")


def predict_command(args) -> int:
    model_dir = fine_tuned_model(args.model)
    labels = LabelMap.load(os.path.join(model_dir, "labels.json"))
    tokenizer = load_tokenizer(model_dir)
    check_vocab(model_dir, tokenizer)
    device = setup_device(args.device)
    model = BertForSequenceClassification.from_pretrained(model_dir).to(device)
    if model.config.num_labels != len(labels):
        raise CheckpointError(f"{model_dir}: config.json has {model.config.num_labels} labels, labels.json "
                              f"{len(labels)}")
    texts = list(args.texts)
    if args.file and args.file != "-" and not os.path.isfile(args.file):
        raise DataError(f"{args.file}: no such file")
    if args.file:  # text, checked: a binary file is refused by name, not read as lines of noise
        with open(args.file, "rb") if args.file != "-" else contextlib.nullcontext(sys.stdin.buffer) as f:
            text = decode_text(f.read(), "standard input" if args.file == "-" else args.file)
        texts += [line.rstrip("\r") for line in text.split("\n") if line.strip()]
    if not texts:
        raise UsageError("nothing to classify: give texts as arguments, or --file FILE (--file - reads standard input)")
    pairs = [t.split("\t", 1) if "\t" in t else (t, None) for t in texts]  # a tab separates a sentence pair
    max_length = min(args.max_length, model.config.max_position_embeddings)
    # predict() reports a loss against labels; new text has none, so a placeholder 0 stands in.
    encoded = [dict(tokenizer.encode(a, b, max_length=max_length), label=0) for a, b in pairs]
    probs = predict(model, encoded, args.batch_size, tokenizer.pad_token_id, device, contextlib.nullcontext())["probs"]
    for text, p in zip(texts, probs):
        if args.json:
            print(json.dumps({"text": text, "label": labels.labels[p.argmax()],
                              "probabilities": {l: round(float(v), 6) for l, v in zip(labels.labels, p)}}))
        else:
            print(f"{labels.labels[p.argmax()]}\t{p.max():.4f}\t{text}")
    return 0


# ----------------------------------------------------------------------------- command line


def train_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="finetune_cls.py", description=__doc__.split("\n\n")[0].strip() +
        " Run `finetune_cls.py predict --help` for classifying new text with a fine-tuned model.",
        formatter_class=HelpFormatter)
    for add_flags in (add_data_flags, add_model_flags, add_optimisation_flags, add_transfer_flags,
                      add_logging_flags):
        add_flags(p)
    return p


def add_data_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data (default: the embedded docsource task)")
    g.add_argument("--task", default="docsource", choices=["docsource", *GLUE_TASKS],
                   help="docsource: sentences of Python/numpy/torch documentation labelled by source (offline); "
                        "a GLUE task: downloaded once, checksum-verified, cached")
    g.add_argument("--train", metavar="FILE", help="your own training file (.tsv/.csv with a header, or .jsonl); "
                   "one or two text columns, string labels; overrides --task")
    g.add_argument("--valid", metavar="FILE", help="validation file (default: --valid-fraction of --train)")
    g.add_argument("--test", metavar="FILE", help="test file for the final report (default: none, report on valid)")
    g.add_argument("--text-columns", metavar="A[,B]", help="the text column(s) of your files "
                   "(default: found by name: sentence, sentence1/sentence2, question/sentence, text, ...)")
    g.add_argument("--label-column", default="label", help="the label column of your files")
    g.add_argument("--valid-fraction", type=float, default=0.1,
                   help="share of train held out for validation when there is no valid file (GLUE: always; "
                        "at most 5000 examples)")
    g.add_argument("--glue-url", default=os.environ.get("GLUE_BASE_URL", GLUE_BASE_URL),
                   help="where the GLUE zips are (http(s):// or file://); env GLUE_BASE_URL")
    g.add_argument("--glue-sha256", metavar="HEX", help="expect this sha256 for the task's zip instead of the "
                   "recorded one (for a mirror that serves a different zip)")
    g.add_argument("--cache-dir", default=default_cache_dir(), help="downloads, the default corpus and vocabularies")
    g.add_argument("--max-length", type=int, default=128, help="max tokens per example, [CLS] and [SEP] included")


def add_model_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--init", metavar="PATH|scratch",
                   help="a Hugging Face BERT directory (config.json + weights + vocab.txt), a train_mlm.py run "
                        "directory (its final/), or 'scratch' for random weights (default: the newest "
                        "runs/*/final of train_mlm.py, else scratch)")
    g.add_argument("--config", choices=list(PRESETS),
                   help="model size for --init scratch (default: the newest train_mlm.py run's size, else tiny)")
    g.add_argument("--vocab", metavar="FILE", help="vocab.txt for --init scratch (default: the newest "
                   "train_mlm.py run's, else one trained on the train split)")
    g.add_argument("--vocab-size", type=int, default=8192,
                   help="vocabulary to train for --init scratch when no train_mlm.py run provides one")


def add_optimisation_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("optimisation (BERT's recipe)")
    g.add_argument("--epochs", type=int, default=3, help="passes over the training set")
    g.add_argument("--batch-size", type=int, default=32, help="examples per step")
    g.add_argument("--lr", type=float, help="peak learning rate (default by hidden size: 1e-3 up to 128, "
                   "2e-4 up to 256, 1e-4 up to 512, 3e-5 up to 768, else 2e-5)")
    g.add_argument("--warmup", type=float, default=0.1, help="share of the steps with linear warmup")
    g.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (not on biases, LayerNorm)")
    g.add_argument("--dropout", type=float, default=0.1,
                   help="hidden and attention dropout while fine-tuning (BERT's), whatever the model was pretrained with")
    g.add_argument("--clip", type=float, default=1.0, help="gradient-norm clipping threshold")
    g.add_argument("--metric", choices=["acc", "f1", "mcc"],
                   help="validation metric that picks the best epoch (default: mcc for cola, else acc)")
    g.add_argument("--patience", type=int, default=0,
                   help="stop after this many evaluations (epochs) without a better valid metric (0: never)")
    g.add_argument("--min-steps", type=int,
                   help="raise --epochs so that training takes at least this many steps, for a few labels "
                        "(evaluating at most max(--epochs, 10) times); default: 150 for a --per-class subset, "
                        "else 0")
    g.add_argument("--bucket-size", type=int, default=100,
                   help="length bucketing: sort each run of this many batches by length (0: off)")
    g.add_argument("--pad-to-max-length", action="store_true",
                   help="pad every batch to --max-length, as the original; slower, for comparison")


def add_transfer_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("did pretraining help? (see docs/fine-tuning.md)")
    g.add_argument("--compare", action="store_true",
                   help="fine-tune the pretrained model (--init, else the newest train_mlm.py run) and the scratch "
                        "baseline alike: sibling TensorBoard runs pretrained/ and scratch/, and a table of both")
    g.add_argument("--per-class", nargs="+", metavar="N|all",
                   help="keep N train examples per class (seeded by the run's seed, stratified); several "
                        "values run a learning curve (with --compare: both models at every N)")
    g.add_argument("--seeds", nargs="+", type=int, metavar="S",
                   help="run everything once per seed (default: --seed); a sweep's table gives each and the mean")


def add_logging_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("logging and system")
    g.add_argument("--out-dir", default="runs", help="where runs live: train_mlm.py's (searched for --init) "
                   "and this script's (cls-*)")
    g.add_argument("--run-name", help="this run's folder under --out-dir (default: cls-<task>-<time>)")
    g.add_argument("--log-interval", type=int, default=10, help="steps between train scalars")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--seed", type=int, default=42, help="seed for init, shuffling and dropout")
    g.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")
    g.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                   help="bf16/fp16 autocast; fp16 uses a gradient scaler (CUDA only)")


def predict_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="finetune_cls.py predict",
                                description="Classify new text with a model saved by finetune_cls.py.",
                                formatter_class=HelpFormatter)
    p.add_argument("texts", nargs="*", help="texts to classify (a tab inside one separates a sentence pair)")
    p.add_argument("--model", required=True, help="the run's model/ directory (or the run directory)")
    p.add_argument("--file", help="a file with one text per line ('-': standard input)")
    p.add_argument("--json", action="store_true", help="one JSON object per line with every class's probability")
    p.add_argument("--batch-size", type=int, default=64, help="texts per forward pass")
    p.add_argument("--max-length", type=int, default=128, help="max tokens per text")
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")
    return p


def resolve_settings(args: argparse.Namespace) -> Settings:
    """The flags resolved once: --per-class as numbers (0: all), and the seeds."""
    values = vars(args).copy()
    per_class = [0 if n == "all" else int(n) for n in args.per_class or ["all"]]
    values.update(per_class=per_class, seeds=args.seeds or [args.seed])
    return Settings(**values)


def check_train_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    problem = not_positive(vars(args), ("epochs", "batch_size", "max_length", "log_interval", "vocab_size"))
    if problem:
        p.error(problem)
    if args.max_length < 4:
        p.error(f"--max-length must be at least 4 ([CLS], [SEP] and room for text), got {args.max_length}")
    problem = fine_tuning_problem(vars(args))
    if problem:
        p.error(problem)
    for n in args.per_class or []:
        if n != "all" and (not n.isdigit() or int(n) <= 0):
            p.error(f"--per-class takes positive numbers or 'all', got {n}")
    if args.min_steps is not None and args.min_steps < 0:
        p.error(f"--min-steps must not be negative, got {args.min_steps}")
    if vocab_size_problem(args.vocab_size):
        p.error(vocab_size_problem(args.vocab_size))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["predict"]:
        return run_predict(argv[1:], predict_parser(), predict_command, bad_input=(DataError, CheckpointError))
    p = train_parser()
    args = p.parse_args(argv[1:] if argv[:1] == ["train"] else argv)
    check_train_flags(p, args)
    # SIGTERM stops as Ctrl-C does: the best model saved so far stays complete (exit 143)
    return run_cli(lambda: train_command(resolve_settings(args)), bad_input=(DataError, CheckpointError), sigterm=True)


if __name__ == "__main__":
    sys.exit(main())
