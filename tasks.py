"""
Classification tasks for finetune_cls.py: the embedded docsource task, GLUE tasks (downloaded once and
checked against their sha256), the user's own files, and label-scarce subsets of a train split.
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass

from cli import DataError
from corpus import default_corpus
from data import ClassificationExample, read_classification_file, split_ids
from training import Settings

GLUE_BASE_URL = "https://dl.fbaipublicfiles.com/glue/data"  # the official mirror of the GLUE zips


@dataclass
class Task:
    name: str
    train: list[ClassificationExample]
    valid: list[ClassificationExample]
    test: list[ClassificationExample]  # empty: no test set, the final report is on valid
    metric: str  # the validation metric that picks the best epoch: acc, f1 or mcc
    info: dict

    def train_texts(self) -> list[str]:
        return [t for e in self.train for t in (e.text_a, e.text_b) if t]

    def with_train(self, train: list[ClassificationExample]) -> "Task":
        """The same task with another train split (a label-scarce subset): valid and test unchanged."""
        return Task(self.name, train, self.valid, self.test, self.metric, {**self.info, "train_examples": len(train)})


# The embedded task: data.py's default corpus lists its documents source by source, in the order of
# info["sources"]; each source becomes a class.
DOCSOURCE_LABELS = {"python_docs": "python-reference", "stdlib": "python-stdlib", "numpy": "numpy",
                    "torch": "pytorch"}
DOCSOURCE_SIZES = {"train": 800, "valid": 250, "test": 250}  # sentences per class
# Valid and test each take at least this share of a class's documents, then sentences from all of
# them: drawn from a few documents, a split's accuracy would move with the topics of those few, and the
# best epoch would be picked by that noise.
DOCSOURCE_DOCUMENT_SHARE = 0.2
DOCSOURCE_WORDS = (5, 64)  # shorter sentences say little; longer ones are rare and slow


def docsource_task(cache_dir: str, seed: int = 0) -> Task:
    """Sentences labelled by documentation source, balanced, split by document. The split does not
    depend on the fine-tuning seed: every run is measured on the same valid and test sentences."""
    documents, info = default_corpus(cache_dir)
    counts = [s["documents"] for s in info["sources"].values()]
    if sum(counts) != len(documents) or set(info["sources"]) != set(DOCSOURCE_LABELS):
        raise DataError(f"{info.get('path', cache_dir)}: the default corpus does not list its documents by "
                        f"source as expected ({', '.join(info['sources'])})")
    # A sentence found twice (a boilerplate line, a copied docstring) could land in two splits or carry
    # two labels: keep only sentences that occur once in the whole corpus.
    seen: dict[str, int] = {}
    for doc in documents:
        for sentence in doc:
            seen[sentence] = seen.get(sentence, 0) + 1
    rng = random.Random(seed)
    splits: dict[str, list[ClassificationExample]] = {"train": [], "valid": [], "test": []}
    documents_per_split: dict[str, dict[str, int]] = {}
    start = 0
    for source, n_docs in zip(info["sources"], counts):
        label = DOCSOURCE_LABELS[source]
        docs = [[x for x in d if seen[x] == 1 and DOCSOURCE_WORDS[0] <= len(x.split()) <= DOCSOURCE_WORDS[1]]
                for d in documents[start:start + n_docs]]
        start += n_docs
        taken = split_documents_by_share([d for d in docs if d], rng)
        documents_per_split[label] = {split: len(ds) for split, ds in taken.items()}
        for split, split_docs in taken.items():
            sentences = [x for d in split_docs for x in d]
            if len(sentences) < DOCSOURCE_SIZES[split]:
                raise DataError(f"{info.get('path', cache_dir)}: only {len(sentences)} {split} sentences for "
                                f"class {label}, {DOCSOURCE_SIZES[split]} needed")
            chosen = rng.sample(sentences, DOCSOURCE_SIZES[split])
            splits[split].extend(ClassificationExample(x, None, label, i + 1, f"docsource/{split}")
                                 for i, x in enumerate(chosen))
    for examples in splits.values():
        rng.shuffle(examples)
    task_info = {"task": "docsource", "corpus": info.get("path"), "classes": list(DOCSOURCE_LABELS.values()),
                 "sentences_per_class": DOCSOURCE_SIZES, "documents_per_split": documents_per_split,
                 "words_per_sentence": DOCSOURCE_WORDS}
    return Task("docsource", splits["train"], splits["valid"], splits["test"], "acc", task_info)


def split_documents_by_share(docs: list[list[str]], rng: random.Random) -> dict[str, list[list[str]]]:
    """Whole documents, in a shuffled order, to test, then valid, until each holds its share of the
    documents and its quota of sentences; the rest to train."""
    order = list(range(len(docs)))
    rng.shuffle(order)
    taken: dict[str, list[list[str]]] = {"test": [], "valid": [], "train": []}
    n_sentences = {"test": 0, "valid": 0, "train": 0}
    for i in order:
        split = next(s for s in ("test", "valid", "train") if s == "train" or n_sentences[s] < DOCSOURCE_SIZES[s]
                     or len(taken[s]) < DOCSOURCE_DOCUMENT_SHARE * len(docs))
        taken[split].append(docs[i])
        n_sentences[split] += len(docs[i])
    return taken


def per_class_subset(examples: list[ClassificationExample], n: int, seed: int) -> list[ClassificationExample]:
    """n examples of each class (all of a class that has fewer), drawn at random with the seed, in their
    original order: the label-scarce train split of a learning curve. Stratified: every class keeps n."""
    by_class: dict[str, list[int]] = {}
    for i, e in enumerate(examples):
        by_class.setdefault(e.label, []).append(i)
    rng = random.Random(f"per-class/{seed}")
    keep = set()
    for label in sorted(by_class):
        keep.update(rng.sample(by_class[label], min(n, len(by_class[label]))))
    return [e for i, e in enumerate(examples) if i in keep]


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
    if os.path.lexists(folder):  # made by hand, or by older code: fetched again, and replaced whole below
        missing = ", ".join(os.path.basename(p) for p in paths if not os.path.isfile(p))
        print(f"{folder}: incomplete (no {missing}); downloading the task again to replace it", file=sys.stderr)
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
        if os.path.lexists(folder):  # the incomplete one: aside, then gone once the whole one is in place
            os.replace(folder, os.path.join(tmp, "incomplete"))
        os.replace(unpacked, folder)  # all files appear at once, or none
    return paths


def glue_task(name: str, s: Settings) -> Task:
    """GLUE's test sets have no public labels: train on train minus a held-out part (valid, which picks
    the best epoch), and report on the official dev set as the test set."""
    spec = GLUE_TASKS[name]
    train_file, dev_file = glue_files(name, s.cache_dir, s.glue_url, s.glue_sha256)
    train = read_classification_file(train_file, label_column=spec.label_column)
    test = read_classification_file(dev_file, label_column=spec.label_column)
    train, valid = split_off(train, s.valid_fraction, s.seed)
    return Task(name, train, valid, test, spec.metric,
                {"task": name, "train": train_file, "valid": f"{s.valid_fraction:.0%} of {train_file}",
                 "test": f"{dev_file} (the official dev set: GLUE's test labels are not public)"})


def split_off(examples: list, fraction: float, seed: int, cap: int = 5000) -> tuple[list, list]:
    """(rest, held out): a seeded random fraction of the examples (at most cap, at least one), in order."""
    if len(examples) < 2:
        raise DataError(f"{examples[0].path}: one example is too few to hold out a validation set")
    kept, held = split_ids(len(examples), fraction, seed, cap)
    return [examples[i] for i in kept], [examples[i] for i in held]


def file_task(s: Settings) -> Task:
    columns = s.text_columns.split(",") if s.text_columns else None
    read = lambda path: read_classification_file(path, columns, s.label_column)
    train = read(s.train)
    if s.valid:
        valid = read(s.valid)
    else:
        train, valid = split_off(train, s.valid_fraction, s.seed)
    test = read(s.test) if s.test else []
    return Task(os.path.splitext(os.path.basename(s.train))[0], train, valid, test, "acc",
                {"task": "files", "train": s.train,
                 "valid": s.valid or f"{s.valid_fraction:.0%} of {s.train}", "test": s.test})


def load_task(s: Settings) -> Task:
    if s.train:
        task = file_task(s)
    elif s.task == "docsource":
        task = docsource_task(s.cache_dir)
    else:
        task = glue_task(s.task, s)
    if s.metric:
        task.metric = s.metric
    for split in ("train", "valid"):
        if not getattr(task, split):
            raise DataError(f"{task.name}: the {split} split is empty")
    return task
