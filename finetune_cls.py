"""
Fine-tune a pretrained BERT for text classification, and watch it in TensorBoard.

    python finetune_cls.py                                   # newest train_mlm.py model, embedded task
    python finetune_cls.py --init scratch                    # the same, from random weights (baseline)
    python finetune_cls.py --train train.tsv --valid dev.tsv --test test.tsv --init ~/bert-base-uncased
    python finetune_cls.py --task sst2                      # a GLUE task, downloaded once and cached
    python finetune_cls.py predict --model runs/cls-docsource-.../model "Return a new tensor."

The recipe is BERT's (Devlin et al., 2018, appendix A.3): AdamW, lr 2e-5..5e-5, 10% linear warmup then
linear decay, 3 epochs, batch 32, max length 128, gradient clipping. Batches are padded to their longest
sequence, with length bucketing, instead of always to 128.

Everything a run makes lands in runs/cls-<task>-<time>/: TensorBoard events, model/ (the best epoch by
the validation metric, in the Hugging Face layout, plus labels.json) and results.json. The "cls-" prefix
and model/ (never final/) keep fine-tuning runs apart from train_mlm.py's pretraining runs.

The embedded default task, "docsource", is real text with honest labels: each sentence of the
documentation that ships with Python, numpy and torch (data.py's default corpus) labelled by where it
comes from: Python's reference manual, a standard-library docstring, a numpy docstring or a torch
docstring. Splits are by document (topic or module), so no test sentence shares a page with training.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import hashlib
import json
import math
import os
import random
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from data import (BertTokenizer, ClassificationExample, DataError, LabelMap, cached_vocab, classification_batches,
                  default_corpus, encode_classification, read_classification_file)
from model import PRESETS, BertConfig, BertForSequenceClassification, CheckpointError, atomic_write
from train_mlm import (HelpFormatter, UsageError, autocast_for, lr_lambda,  # shared by both
                       make_optimizer, setup_device)

DEFAULT_CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "bert-from-scratch")
GLUE_BASE_URL = "https://dl.fbaipublicfiles.com/glue/data"  # the official mirror of the GLUE zips


# ----------------------------------------------------------------------------- tasks


@dataclass
class Task:
    name: str
    train: list[ClassificationExample]
    valid: list[ClassificationExample]
    test: list[ClassificationExample]  # empty: no test set, the final report is on valid
    metric: str  # the validation metric that picks the best epoch: acc, f1 or mcc
    info: dict


# The embedded task: data.py's default corpus lists its documents source by source, in the order of
# info["sources"]; each source becomes a class.
DOCSOURCE_LABELS = {"python_docs": "python-reference", "stdlib": "python-stdlib", "numpy": "numpy",
                    "torch": "pytorch"}
DOCSOURCE_SIZES = {"train": 800, "valid": 150, "test": 250}  # sentences per class
DOCSOURCE_WORDS = (5, 64)  # shorter sentences say little; longer ones are rare and slow


def docsource_task(cache_dir: str, seed: int = 0) -> Task:
    """Sentences labelled by documentation source, balanced, split by document."""
    documents, info = default_corpus(cache_dir)
    counts = [s["documents"] for s in info["sources"].values()]
    if sum(counts) != len(documents) or set(info["sources"]) != set(DOCSOURCE_LABELS):
        raise DataError(f"{info.get('path', cache_dir)}: the default corpus does not list its documents by "
                        f"source as expected ({', '.join(info['sources'])})")
    # A sentence found twice (a boilerplate line, a copied docstring) could land in two splits or carry
    # two labels: keep only sentences that occur once in the whole corpus.
    seen: dict[str, int] = {}
    for doc in documents:
        for s in doc:
            seen[s] = seen.get(s, 0) + 1
    rng = random.Random(seed)
    splits: dict[str, list[ClassificationExample]] = {"train": [], "valid": [], "test": []}
    documents_per_split: dict[str, dict[str, int]] = {}
    start = 0
    for source, n_docs in zip(info["sources"], counts):
        label = DOCSOURCE_LABELS[source]
        docs = [[s for s in d if seen[s] == 1 and DOCSOURCE_WORDS[0] <= len(s.split()) <= DOCSOURCE_WORDS[1]]
                for d in documents[start:start + n_docs]]
        start += n_docs
        order = list(range(len(docs)))
        rng.shuffle(order)
        # Whole documents go to test, then valid, until each holds its quota; the rest is train.
        taken: dict[str, list[str]] = {"test": [], "valid": [], "train": []}
        n_taken = documents_per_split[label] = {"test": 0, "valid": 0, "train": 0}
        for i in (i for i in order if docs[i]):
            split = next(s for s in ("test", "valid", "train")
                         if s == "train" or len(taken[s]) < DOCSOURCE_SIZES[s])
            taken[split].extend(docs[i])
            n_taken[split] += 1
        for split, sentences in taken.items():
            if len(sentences) < DOCSOURCE_SIZES[split]:
                raise DataError(f"{info.get('path', cache_dir)}: only {len(sentences)} {split} sentences for "
                                f"class {label}, {DOCSOURCE_SIZES[split]} needed")
            chosen = rng.sample(sentences, DOCSOURCE_SIZES[split])
            splits[split].extend(ClassificationExample(s, None, label, i + 1, f"docsource/{split}")
                                 for i, s in enumerate(chosen))
    for examples in splits.values():
        rng.shuffle(examples)
    task_info = {"task": "docsource", "corpus": info.get("path"), "classes": list(DOCSOURCE_LABELS.values()),
                 "sentences_per_class": DOCSOURCE_SIZES, "documents_per_split": documents_per_split,
                 "words_per_sentence": DOCSOURCE_WORDS}
    return Task("docsource", splits["train"], splits["valid"], splits["test"], "acc", task_info)


@dataclass
class GlueTask:
    zip_name: str
    folder: str
    # The zip's sha256, checked before anything is unpacked. These are the values that Hugging Face
    # datasets' glue script and TensorFlow Datasets' url_checksums/glue.txt record for the same zips.
    sha256: str
    dev_file: str = "dev.tsv"
    label_column: str = "label"
    header: tuple[str, ...] | None = None  # for files without a header row (CoLA)
    metric: str = "acc"


GLUE_TASKS = {  # the classification tasks; STS-B (regression) and MRPC (not one zip) are not here
    "cola": GlueTask("CoLA.zip", "CoLA", header=("source", "label", "original_label", "sentence"), metric="mcc",
                     sha256="f212fcd832b8f7b435fb991f101abf89f96b933ab400603bf198960dfc32cbff"),
    "sst2": GlueTask("SST-2.zip", "SST-2", sha256="d67e16fb55739c1b32cdce9877596db1c127dc322d93c082281f64057c16deaa"),
    "qnli": GlueTask("QNLIv2.zip", "QNLI", sha256="e634e78627a29adaecd4f955359b22bf5e70f2cbd93b493f2d624138a0c0e5f5"),
    "qqp": GlueTask("QQP-clean.zip", "QQP", label_column="is_duplicate",
                    sha256="40e7c862c04eb26ee04b67fd900e76c45c6ba8e6d8fab4f8f1f8072a1a3fbae0"),
    "rte": GlueTask("RTE.zip", "RTE", sha256="6bf86de103ecd335f3441bd43574d23fef87ecc695977a63b82d5efb206556ee"),
    "wnli": GlueTask("WNLI.zip", "WNLI", sha256="ae0e8e4d16f4d46d4a0a566ec7ecceccfd3fbfaa4a7a4b4e02848c0f2561ac46"),
    "mnli": GlueTask("MNLI.zip", "MNLI", dev_file="dev_matched.tsv", label_column="gold_label",
                     sha256="e7c1d896d26ed6caf700110645df426cc2d8ebf02a5ab743d5a5c68ac1c83633"),
}


def glue_files(name: str, cache_dir: str, base_url: str, sha256: str | None = None) -> tuple[str, str]:
    """(train.tsv, dev file) of a GLUE task: downloaded once, checked against its sha256, unpacked into
    cache_dir/glue/<folder>/. Nothing is cached unless the checksum matches."""
    spec = GLUE_TASKS[name]
    folder = os.path.join(cache_dir, "glue", spec.folder)
    paths = (os.path.join(folder, "train.tsv"), os.path.join(folder, spec.dev_file))
    if all(os.path.isfile(p) for p in paths):
        return paths
    expected = (sha256 or spec.sha256).lower()
    url = f"{base_url.rstrip('/')}/{spec.zip_name}"
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    with tempfile.TemporaryDirectory(dir=os.path.dirname(folder), prefix=".tmp-") as tmp:
        zip_path = os.path.join(tmp, spec.zip_name)
        print(f"downloading {url} ...", file=sys.stderr)
        digest = hashlib.sha256()
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(zip_path, "wb") as f:
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    f.write(chunk)
        except (urllib.error.URLError, OSError) as e:
            raise DataError(f"{url}: download failed ({getattr(e, 'reason', e)}); nothing was cached") from None
        if digest.hexdigest() != expected:
            raise DataError(f"{url}: sha256 {digest.hexdigest()} does not match the expected {expected}; "
                            "the file was deleted, nothing was cached")
        unpacked = os.path.join(tmp, spec.folder)
        os.makedirs(unpacked)
        try:
            with zipfile.ZipFile(zip_path) as z:
                for path in paths:
                    member = f"{spec.folder}/{os.path.basename(path)}"
                    if member not in z.namelist():
                        raise DataError(f"{url}: the zip has no {member}")
                    data = z.read(member)
                    if spec.header:
                        data = "\t".join(spec.header).encode() + b"\n" + data
                    with open(os.path.join(unpacked, os.path.basename(path)), "wb") as f:
                        f.write(data)
        except zipfile.BadZipFile:
            raise DataError(f"{url}: not a zip file") from None
        os.replace(unpacked, folder)  # all files appear at once, or none
    return paths


def glue_task(name: str, args) -> Task:
    """GLUE's test sets have no public labels: train on train minus a held-out part (valid, which picks
    the best epoch), and report on the official dev set as the test set."""
    spec = GLUE_TASKS[name]
    train_file, dev_file = glue_files(name, args.cache_dir, args.glue_url, args.glue_sha256)
    train = read_classification_file(train_file, label_column=spec.label_column)
    test = read_classification_file(dev_file, label_column=spec.label_column)
    train, valid = split_off(train, args.valid_fraction, args.seed)
    return Task(name, train, valid, test, spec.metric,
                {"task": name, "train": train_file, "valid": f"{args.valid_fraction:.0%} of {train_file}",
                 "test": f"{dev_file} (the official dev set: GLUE's test labels are not public)"})


def split_off(examples: list, fraction: float, seed: int, cap: int = 5000) -> tuple[list, list]:
    """(rest, held out): a seeded random fraction of the examples (at most cap, at least one)."""
    if len(examples) < 2:
        raise DataError(f"{examples[0].path}: one example is too few to hold out a validation set")
    n = min(cap, max(1, round(len(examples) * fraction)))
    held = set(random.Random(seed).sample(range(len(examples)), n))
    return ([e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held])


def file_task(args) -> Task:
    columns = args.text_columns.split(",") if args.text_columns else None
    read = lambda path: read_classification_file(path, columns, args.label_column)
    train = read(args.train)
    if args.valid:
        valid = read(args.valid)
    else:
        train, valid = split_off(train, args.valid_fraction, args.seed)
    test = read(args.test) if args.test else []
    return Task(os.path.splitext(os.path.basename(args.train))[0], train, valid, test, "acc",
                {"task": "files", "train": args.train,
                 "valid": args.valid or f"{args.valid_fraction:.0%} of {args.train}", "test": args.test})


def load_task(args) -> Task:
    if args.train:
        task = file_task(args)
    elif args.task == "docsource":
        task = docsource_task(args.cache_dir)
    else:
        task = glue_task(args.task, args)
    if args.metric:
        task.metric = args.metric
    for split in ("train", "valid"):
        if not getattr(task, split):
            raise DataError(f"{task.name}: the {split} split is empty")
    return task


# ----------------------------------------------------------------------------- model and vocabulary


def newest_pretrained(out_dir: str) -> str | None:
    """The final/ export of the newest train_mlm.py run under out_dir (fine-tuning runs have none)."""
    configs = glob.glob(os.path.join(out_dir, "*", "final", "config.json"))
    return os.path.dirname(max(configs, key=os.path.getmtime)) if configs else None


def checkpoint_dir(init: str) -> str:
    """--init PATH: a Hugging Face layout directory, or a train_mlm.py run directory (its final/)."""
    if os.path.isfile(os.path.join(init, "config.json")):
        return init
    if os.path.isfile(os.path.join(init, "final", "config.json")):
        return os.path.join(init, "final")
    if os.path.isdir(os.path.join(init, "checkpoints")):
        raise CheckpointError(f"{init}: this train_mlm.py run has no final/ export yet (it is still running, "
                              "or stopped early); wait for it or resume it")
    raise CheckpointError(f"{init}: not a checkpoint directory (config.json + weights + vocab.txt), a "
                          "train_mlm.py run directory (final/), or 'scratch'")


def load_tokenizer(model_dir: str) -> BertTokenizer:
    vocab_file = os.path.join(model_dir, "vocab.txt")
    if not os.path.isfile(vocab_file):
        raise CheckpointError(f"{vocab_file}: missing; the checkpoint needs the vocabulary it was trained with")
    settings = tokenizer_settings(model_dir)
    if settings is None:  # Google's checkpoints ship none
        return tokenizer_for(vocab_file)
    return BertTokenizer(vocab_file, do_lower_case=settings.get("do_lower_case", True))


def tokenizer_settings(model_dir: str) -> dict | None:
    """A checkpoint's tokenizer_config.json (train_mlm.py's also holds model_max_length, the --seq-len it
    was pretrained at), or None when it has none."""
    settings_file = os.path.join(model_dir, "tokenizer_config.json")
    if not os.path.isfile(settings_file):
        return None
    with open(settings_file, encoding="utf-8") as f:
        return json.load(f)


def tokenizer_for(vocab_file: str) -> BertTokenizer:
    """A tokenizer for a bare vocab.txt: lower-casing unless the vocabulary has upper-case tokens."""
    if not os.path.isfile(vocab_file):
        raise DataError(f"{vocab_file}: no such file")
    with open(vocab_file, encoding="utf-8") as f:
        cased = any(t[:1].isupper() for t in f.read().split() if not t.startswith("["))
    return BertTokenizer(vocab_file, do_lower_case=not cased)


def check_vocab(model_dir: str, tokenizer: BertTokenizer) -> None:
    config_file = os.path.join(model_dir, "config.json")
    try:
        with open(config_file, encoding="utf-8") as f:
            config = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{config_file}: not valid JSON ({e})") from None
    if config.get("vocab_size") != len(tokenizer):
        raise CheckpointError(f"{config_file} has vocab_size {config.get('vocab_size')} but "
                              f"{tokenizer.vocab_file} has {len(tokenizer)} tokens: the vocabulary does not "
                              "belong to this checkpoint")


def scratch_vocab(args, task: Task) -> tuple[BertTokenizer, str]:
    """A vocabulary for the random-init baseline: the newest pretraining run's (so that the baseline
    differs from fine-tuning it only in the weights), else one trained on the task's train texts."""
    if args.vocab:
        return tokenizer_for(args.vocab), f"the vocabulary {args.vocab}"
    pretrained = newest_pretrained(args.out_dir)
    if pretrained:
        return load_tokenizer(pretrained), f"the vocabulary of {pretrained}"
    texts = [t for e in task.train for t in (e.text_a, e.text_b) if t]
    vocab_file = cached_vocab(texts, args.vocab_size, args.cache_dir)
    return BertTokenizer(vocab_file), f"a {args.vocab_size}-token WordPiece vocabulary trained on the train split"


def scratch_config(args, vocab_size: int, id2label: dict[int, str]) -> tuple[BertConfig, str]:
    """The random-init baseline's size: --config, else the newest pretraining run's (so that the two
    differ only in the weights), else train_mlm.py's default, tiny."""
    pretrained = None if args.config else newest_pretrained(args.out_dir)
    if pretrained:
        with open(os.path.join(pretrained, "config.json"), encoding="utf-8") as f:
            hf_config = json.load(f)
        config = BertConfig.from_hf_dict({**hf_config, "vocab_size": vocab_size, "id2label": id2label})
        return config, f"the size of {pretrained}"
    name = args.config or "tiny"
    return BertConfig.from_preset(name, vocab_size=vocab_size, id2label=id2label), f"the '{name}' preset"


def build_model(args, task: Task, labels: LabelMap) -> tuple[BertForSequenceClassification, BertTokenizer, str, str]:
    """(model, tokenizer, the checkpoint directory or 'scratch', a note on where the weights and
    vocabulary come from)."""
    id2label = dict(enumerate(labels.labels))
    init = args.init
    if init is None:
        init = newest_pretrained(args.out_dir)
        if init is None:
            print(f"no train_mlm.py checkpoint under {args.out_dir}/ (no */final/config.json): fine-tuning a "
                  f"randomly initialised '{args.config or 'tiny'}' BERT instead, as --init scratch would; pretrain one "
                  "with `python train_mlm.py` to measure transfer learning")
            init = "scratch"
    if init == "scratch":
        tokenizer, vocab_note = scratch_vocab(args, task)
        config, size_note = scratch_config(args, len(tokenizer), id2label)
        return BertForSequenceClassification(config), tokenizer, init, f"random init ({size_note}), {vocab_note}"
    model_dir = checkpoint_dir(init)
    tokenizer = load_tokenizer(model_dir)
    check_vocab(model_dir, tokenizer)
    model = BertForSequenceClassification.from_pretrained(model_dir, id2label=id2label)
    fresh = ", ".join(model.load_report["missing"]) or "nothing"
    return model, tokenizer, model_dir, f"{model_dir} (initialised fresh: {fresh})"


def default_lr(config: BertConfig) -> float:
    # BERT's 2e-5..5e-5 is for base and large. The compact models need larger steps: on the default
    # task, sweeps gave the best test accuracy at 1e-3 for tiny and 2e-4 for mini (see the README).
    h = config.hidden_size
    return 1e-3 if h <= 128 else 2e-4 if h <= 256 else 1e-4 if h <= 512 else 3e-5 if h <= 768 else 2e-5


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


def confusion_image(cm: np.ndarray, cell: int = 32) -> np.ndarray:
    """The confusion matrix as an HWC uint8 heat-map (rows: true class, columns: predicted; each row
    normalised, white = 0 -> dark blue = the whole row), with grey grid lines."""
    share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    low, high = np.array([255, 255, 255]), np.array([8, 48, 107])
    img = (low + (high - low) * share[..., None]).astype(np.uint8).repeat(cell, 0).repeat(cell, 1)
    img[::cell, :], img[:, ::cell] = 160, 160
    return img


def confusion_table(cm: np.ndarray, labels: list[str]) -> str:
    rows = ["| true \\ predicted | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    rows += [f"| {label} | " + " | ".join(str(int(v)) for v in row) + " |" for label, row in zip(labels, cm)]
    return "\n".join(rows)


# ----------------------------------------------------------------------------- training


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


def evaluate(model, encoded: list[dict], args, device, autocast) -> dict:
    out = predict(model, encoded, args.batch_size, args.pad_token_id, device, autocast)
    out["labels"] = np.array([e["label"] for e in encoded])
    out["preds"] = out["probs"].argmax(1)
    out["cm"] = confusion_matrix(out["labels"], out["preds"], out["probs"].shape[1])
    out.update(classification_metrics(out["cm"]))
    return out


def log_validation(writer, result: dict, examples: list[ClassificationExample], labels: list[str], step: int) -> None:
    writer.add_scalar("Loss/valid", result["loss"], step)
    writer.add_scalar("Accuracy/valid", result["acc"], step)
    writer.add_scalar("F1/valid", result["f1"], step)
    writer.add_scalar("MCC/valid", result["mcc"], step)
    for c, label in enumerate(labels):  # one-vs-rest precision-recall curve per class
        writer.add_pr_curve(f"PR/{label}", result["labels"] == c, result["probs"][:, c], step)
    writer.add_image("Confusion/valid", confusion_image(result["cm"]), step, dataformats="HWC")
    writer.add_text("Confusion/valid_table", confusion_table(result["cm"], labels), step)
    wrong = np.flatnonzero(result["preds"] != result["labels"])[:25]
    rows = ["| text | true | predicted | p |", "|---|---|---|---|"]
    for i in wrong:
        e = examples[i]
        text = (e.text_a + (f" [SEP] {e.text_b}" if e.text_b else "")).replace("|", "\\|")
        p = result["probs"][i, result["preds"][i]]
        rows.append(f"| {text} | {e.label} | {labels[result['preds'][i]]} | {p:.2f} |")
    writer.add_text("Misclassified/valid", "\n".join(rows) if len(wrong) else "none", step)


def log_projector(writer, result: dict, examples: list[ClassificationExample], labels: list[str], step: int,
                  n: int = 1000) -> None:
    """The pooled [CLS] vectors of validation examples; colour by 'label' in the projector."""
    clean = lambda s: " ".join(s.split())[:200]  # the metadata is a TSV: no tabs or newlines
    meta = [[e.label, labels[p], clean(e.text_a)] for e, p in zip(examples[:n], result["preds"][:n])]
    writer.add_embedding(torch.from_numpy(result["pooled"][:n]), metadata=meta, global_step=step,
                         tag="CLS/valid", metadata_header=["label", "predicted", "text"])


def save_model(model, tokenizer: BertTokenizer, labels: LabelMap, path: str) -> None:
    """The Hugging Face layout (config.json with id2label, model.safetensors, vocab.txt,
    tokenizer_config.json) plus labels.json; every file written atomically."""
    model.save_pretrained(path, vocab_file=tokenizer.vocab_file)
    settings = {"do_lower_case": tokenizer.do_lower_case, "tokenizer_class": "BertTokenizer"}
    atomic_write(os.path.join(path, "tokenizer_config.json"), lambda f: f.write(json.dumps(settings).encode()))
    labels.save(os.path.join(path, "labels.json"))


def train(args) -> int:
    device = setup_device(args.device)
    if args.precision == "fp16" and device.type != "cuda":
        raise UsageError(f"--precision fp16 needs CUDA (device is {device}); use bf16 or fp32")
    if args.run_name:
        run_dir = os.path.join(args.out_dir, args.run_name)
        if os.path.exists(run_dir):
            raise UsageError(f"{run_dir} exists; choose another --run-name (nothing was overwritten)")
    else:  # cls-<task>-<time>, with a counter when two runs start in the same second
        task_name = "files" if args.train else args.task
        base = os.path.join(args.out_dir, f"cls-{task_name}-{time.strftime('%Y%m%d-%H%M%S')}")
        run_dir = next(d for d in (base if i == 0 else f"{base}-{i}" for i in range(1000)) if not os.path.exists(d))
    if args.vocab and args.init != "scratch":
        raise UsageError("--vocab is for --init scratch: a checkpoint brings its own vocab.txt")
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    # --- data, labels, model: every check before anything is written
    t_start = time.time()
    task = load_task(args)
    labels = LabelMap.from_examples(task.train)
    model, tokenizer, init, init_note = build_model(args, task, labels)
    max_length = min(args.max_length, model.config.max_position_embeddings)
    args.pad_token_id = tokenizer.pad_token_id
    train_set, valid_set, test_set = (encode_classification(split, tokenizer, labels, max_length)
                                      for split in (task.train, task.valid, task.test))
    model.to(device)
    lr = args.lr or default_lr(model.config)
    steps_per_epoch = math.ceil(len(train_set) / args.batch_size)
    total_steps = args.epochs * steps_per_epoch
    optimizer = make_optimizer(model, lr, args.weight_decay, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(int(args.warmup * total_steps), total_steps))
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")
    autocast = autocast_for(device, args.precision)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"task: {task.name}, {len(labels)} classes ({', '.join(labels.labels)}); "
          f"{len(task.train)} train, {len(task.valid)} valid, {len(task.test)} test examples")
    print(f"init: {init_note}")
    print(f"model: {model.config.num_hidden_layers} layers, hidden {model.config.hidden_size}, "
          f"{n_params / 1e6:.2f}M parameters, vocab {len(tokenizer)}; lr {lr:g}, {args.epochs} epochs x "
          f"{steps_per_epoch} steps of {args.batch_size}; device {device}, {args.precision}")
    pretrained_length = None if init == "scratch" else (tokenizer_settings(init) or {}).get("model_max_length")
    if pretrained_length and max_length > pretrained_length:
        longer = sum(len(e["input_ids"]) > pretrained_length for e in train_set)
        if longer:
            print(f"note: {init} was pretrained on sequences of at most {pretrained_length} tokens; {longer} of "
                  f"{len(train_set)} train examples are longer, and their positions from {pretrained_length} on "
                  f"start untrained (--max-length {pretrained_length} truncates them instead)")

    from tensorboardX import SummaryWriter
    writer = SummaryWriter(run_dir)
    model_dir = os.path.join(run_dir, "model")
    print(f"logs: {run_dir}")
    writer.add_text("Run/args", "\n".join(f"    {k} = {v}" for k, v in sorted(vars(args).items())), 0)
    writer.add_text("Run/task", "    " + json.dumps(task.info, indent=1).replace("\n", "\n    ") +
                    f"\n\ninit: {init_note}", 0)

    # --- fine-tune
    step, best, best_epoch, epochs_run = 0, -math.inf, 0, 0
    history = []
    for epoch in range(1, args.epochs + 1):
        model.train()
        batches = classification_batches(train_set, args.batch_size, tokenizer.pad_token_id, shuffle=True,
                                         seed=args.seed + epoch, bucket_size=args.bucket_size or None)
        if not args.no_progress and sys.stderr.isatty():  # a log file gets the epoch lines alone
            batches = tqdm(batches, total=steps_per_epoch, desc=f"epoch {epoch}", leave=False, dynamic_ncols=True)
        loss_sum, window, t_window = 0.0, [], time.perf_counter()
        for batch in batches:
            if args.pad_to_max_length:
                batch = pad_to(batch, max_length, tokenizer.pad_token_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            with autocast:
                loss, _ = model(**batch)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip).item()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            window.append((loss.item(), len(batch["labels"])))
            loss_sum += window[-1][0] * window[-1][1]
            if step % args.log_interval == 0 or step % steps_per_epoch == 0:
                elapsed = time.perf_counter() - t_window
                writer.add_scalar("Loss/train", sum(l for l, _ in window) / len(window), step)
                writer.add_scalar("Optim/lr", scheduler.get_last_lr()[0], step)
                writer.add_scalar("Optim/grad_norm", grad_norm, step)
                writer.add_scalar("Perf/samples_per_sec", sum(n for _, n in window) / elapsed, step)
                window, t_window = [], time.perf_counter()
        train_loss = loss_sum / len(train_set)
        result = evaluate(model, valid_set, args, device, autocast)
        print(f"Epoch {epoch}: Train Loss = {train_loss:.4f}, Valid Loss = {result['loss']:.4f}, "
              f"Valid Acc = {result['acc']:.4f}", flush=True)
        log_validation(writer, result, task.valid, labels.labels, step)
        history.append({"epoch": epoch, "train_loss": train_loss,
                        **{f"valid_{k}": float(result[k]) for k in ("loss", "acc", "f1", "mcc")}})
        epochs_run = epoch
        if result[task.metric] > best:
            best, best_epoch, best_result = result[task.metric], epoch, result
            save_model(model, tokenizer, labels, model_dir)
        elif args.patience and epoch - best_epoch >= args.patience:
            print(f"early stopping: valid {task.metric} has not improved for {args.patience} epochs")
            break
    log_projector(writer, best_result, task.valid, labels.labels, step)

    # --- the best epoch on the test set
    model = BertForSequenceClassification.from_pretrained(model_dir).to(device)
    final_split, final_examples = ("test", test_set) if test_set else ("valid", valid_set)
    if not test_set:
        print("no test set: the report below is on the validation set, which also picked the best epoch "
              "(an optimistic estimate)")
    result = evaluate(model, final_examples, args, device, autocast)
    wall = time.time() - t_start
    print_report(result, labels.labels, final_split, best_epoch, task.metric, model_dir, wall)
    results = {"task": task.info, "init": init_note, "labels": labels.labels, "best_epoch": best_epoch,
               "epochs_run": epochs_run, "metric": task.metric, "history": history, "split": final_split,
               **{k: float(result[k]) for k in ("loss", "acc", "f1", "mcc")},
               "confusion_matrix": result["cm"].tolist(), "wall_seconds": round(wall, 1)}
    atomic_write(os.path.join(run_dir, "results.json"), lambda f: f.write(json.dumps(results, indent=1).encode()))
    hparams = {"task": task.name, "init": init, "lr": lr, "epochs": args.epochs,
               "batch_size": args.batch_size, "max_length": max_length, "precision": args.precision,
               "seed": args.seed}
    writer.add_hparams(hparams, {f"hparam/{final_split}_{k}": float(result[k]) for k in ("acc", "f1", "mcc")}
                       | {f"hparam/best_valid_{task.metric}": float(best)}, name="hparams")
    writer.close()
    return 0


def print_report(result: dict, labels: list[str], split: str, best_epoch: int, metric: str,
                 model_dir: str, wall: float) -> None:
    cm = result["cm"]
    print("\n" + "-" * 64)
    print(f"{split} set ({int(cm.sum())} examples), best epoch {best_epoch} by valid {metric}:")
    print(f"  accuracy {result['acc']:.4f}  macro-F1 {result['f1']:.4f}  MCC {result['mcc']:.4f}  "
          f"loss {result['loss']:.4f}")
    width = max(8, *map(len, labels))
    print(f"  {'class':<{width}}  precision  recall  f1      support")
    for c, label in enumerate(labels):
        tp, pred, true = cm[c, c], cm[:, c].sum(), cm[c].sum()
        p, r = tp / max(pred, 1), tp / max(true, 1)
        print(f"  {label:<{width}}  {p:9.4f}  {r:6.4f}  {2 * p * r / max(p + r, 1e-12):6.4f}  {int(true):7d}")
    print("  confusion matrix (rows: true, columns: predicted):")
    for label, row in zip(labels, cm):
        print(f"  {label:<{width}}  " + " ".join(f"{int(v):6d}" for v in row))
    print(f"model: {model_dir}  ({wall:.0f}s in all)")
    print(f"classify new text: python {os.path.relpath(__file__)} predict --model {model_dir} \"some text\"")


# ----------------------------------------------------------------------------- predict


def predict_command(args) -> int:
    model_dir = args.model if os.path.isfile(os.path.join(args.model, "labels.json")) \
        else os.path.join(args.model, "model")  # a run directory works too
    if not os.path.isfile(os.path.join(model_dir, "labels.json")):
        raise CheckpointError(f"{args.model}: not a fine-tuned model (no labels.json in it or in its model/); "
                              "give the model/ folder of a finetune_cls.py run")
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
    if args.file:
        with open(args.file, encoding="utf-8") if args.file != "-" else contextlib.nullcontext(sys.stdin) as f:
            texts += [line.rstrip("\n") for line in f if line.strip()]
    if not texts:
        raise UsageError("nothing to classify: give texts as arguments or --file")
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
    p = argparse.ArgumentParser(
        prog="finetune_cls.py", description=__doc__.split("\n\n")[0].strip() +
        " Run `finetune_cls.py predict --help` for classifying new text with a fine-tuned model.",
        formatter_class=HelpFormatter)
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
    g.add_argument("--cache-dir", default=DEFAULT_CACHE, help="downloads, the default corpus and vocabularies")
    g.add_argument("--max-length", type=int, default=128, help="max tokens per example, [CLS] and [SEP] included")
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
    g = p.add_argument_group("optimisation (BERT's recipe)")
    g.add_argument("--epochs", type=int, default=3, help="passes over the training set")
    g.add_argument("--batch-size", type=int, default=32, help="examples per step")
    g.add_argument("--lr", type=float, help="peak learning rate (default by hidden size: 1e-3 up to 128, "
                   "2e-4 up to 256, 1e-4 up to 512, 3e-5 up to 768, else 2e-5)")
    g.add_argument("--warmup", type=float, default=0.1, help="share of the steps with linear warmup")
    g.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (not on biases, LayerNorm)")
    g.add_argument("--clip", type=float, default=1.0, help="gradient-norm clipping threshold")
    g.add_argument("--metric", choices=["acc", "f1", "mcc"],
                   help="validation metric that picks the best epoch (default: mcc for cola, else acc)")
    g.add_argument("--patience", type=int, default=0,
                   help="stop after this many epochs without a better valid metric (0: never)")
    g.add_argument("--bucket-size", type=int, default=100,
                   help="length bucketing: sort each run of this many batches by length (0: off)")
    g.add_argument("--pad-to-max-length", action="store_true",
                   help="pad every batch to --max-length, as the original; slower, for comparison")
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
    return p


def predict_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="finetune_cls.py predict",
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["predict"]:
        p = predict_parser()
        args, command = p.parse_args(argv[1:]), predict_command
        if args.max_length < 4 or args.batch_size <= 0:
            p.error("--max-length must be at least 4 and --batch-size positive")
    else:
        p = train_parser()
        args, command = p.parse_args(argv[1:] if argv[:1] == ["train"] else argv), train
        for name in ("epochs", "batch_size", "max_length", "log_interval", "vocab_size"):
            if getattr(args, name) <= 0:
                p.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
        if not 0 < args.valid_fraction < 1 or not 0 <= args.warmup < 1:
            p.error("--valid-fraction must be in (0, 1) and --warmup in [0, 1)")
        if args.max_length < 4:
            p.error(f"--max-length must be at least 4 ([CLS], [SEP] and room for text), got {args.max_length}")
        if args.lr is not None and args.lr <= 0:
            p.error(f"--lr must be positive, got {args.lr}")
        if (args.valid or args.test) and not args.train:
            p.error("--valid and --test need --train")
    try:
        return command(args)
    except (DataError, CheckpointError, UsageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C: the best model saved so far (if any) stays; the run is not resumable
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
