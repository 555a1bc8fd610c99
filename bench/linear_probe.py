"""Linear probes of frozen encoders: how much of a classification task a model's features already hold.

    python bench/linear_probe.py runs/a/final runs/b/final random naive-bayes --train T --valid V --test X \
        [--per-class 16 64 all] [--seeds 1 2 3] [--max-length 64]

Fine-tuning changes every weight, so it cannot say what pretraining put where. Here the encoder stays as
it is: each text is encoded once, and two features are read from the last layer, the `[CLS]` vector
(what finetune_cls.py's classifier reads, through the pooler) and the mean of the token vectors. A
multinomial logistic regression on the standardised features is fitted to `--per-class` train examples
(the same stratified subsets as finetune_cls.py's `--per-class` with the same seed), its L2 weight
chosen on valid from a grid, and scored on test. `random` stands for an encoder of the first folder's
size, randomly initialised (the scratch baseline's starting point), read with that folder's vocabulary;
`naive-bayes` for no network at all: multinomial naive Bayes over the characters and character pairs of
the lowercased text (add-one smoothing), on the same subsets, a reference for how lexical a task is.
Texts are encoded and batched as finetune_cls.py does (one text or a pair; naive Bayes reads the first).
Prints one line per model and feature: test accuracy at each label count, mean over seeds.
"""

from __future__ import annotations

import argparse
import collections
import math
import os
import sys
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from cli import DataError  # noqa: E402
from data import ClassificationExample, LabelMap, classification_batches, encode_classification  # noqa: E402
from data import read_classification_file  # noqa: E402
from model import BertConfig, BertModel, CheckpointError  # noqa: E402
from pretrained import load_tokenizer, read_json  # noqa: E402
from tasks import per_class_subset  # noqa: E402

WEIGHT_DECAYS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


@torch.no_grad()
def features(model: BertModel, encoded: list[dict], pad_token_id: int
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """([CLS] vectors, mean token vectors, labels) of encode_classification's examples, in their order: the
    last layer of the frozen encoder, padding left out of the mean."""
    model.eval()
    cls, mean, labels = [], [], []
    for batch in classification_batches(encoded, 256, pad_token_id, shuffle=False, seed=0, bucket_size=None):
        hidden = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])[0]
        m = batch["attention_mask"][..., None].to(hidden.dtype)
        cls.append(hidden[:, 0])
        mean.append((hidden * m).sum(1) / m.sum(1))
        labels.append(batch["labels"])
    return torch.cat(cls), torch.cat(mean), torch.cat(labels)


def probe(train: tuple[torch.Tensor, torch.Tensor], valid: tuple[torch.Tensor, torch.Tensor],
          test: tuple[torch.Tensor, torch.Tensor], n_classes: int) -> float:
    """Test accuracy of the logistic regression whose weight decay scores best on valid."""
    x, y = train
    mu = x.mean(0)
    sd = x.std(0) + 1e-6 if len(x) > 1 else torch.ones_like(mu)
    z = lambda a: (a - mu) / sd
    best_valid, best_test = -1.0, 0.0
    for wd in WEIGHT_DECAYS:
        w = torch.zeros(x.size(1), n_classes, requires_grad=True)
        b = torch.zeros(n_classes, requires_grad=True)
        optimizer = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            loss = F.cross_entropy(z(x) @ w + b, y) + wd * (w * w).sum()
            loss.backward()
            return loss
        optimizer.step(closure)
        with torch.no_grad():
            acc = lambda split: ((z(split[0]) @ w + b).argmax(1) == split[1]).float().mean().item()
            if acc(valid) > best_valid:
                best_valid, best_test = acc(valid), acc(test)
    return best_test


def char_features(text: str) -> list[str]:
    text = text.lower()
    return list(text) + [text[i:i + 2] for i in range(len(text) - 1)]


def naive_bayes(train: list[tuple[str, str]], test: list[tuple[str, str]]) -> float:
    """Test accuracy of multinomial naive Bayes over char_features, add-one smoothed, fitted to `train`."""
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for text, label in train:
        counts[label].update(char_features(text))
    priors = collections.Counter(label for _, label in train)
    vocabulary = len(set().union(*counts.values()))
    totals = {label: sum(c.values()) for label, c in counts.items()}

    def score(text: str, label: str) -> float:
        c, denominator = counts[label], totals[label] + vocabulary
        return math.log(priors[label] / len(train)) + sum(math.log((c[f] + 1) / denominator)
                                                          for f in char_features(text))
    return sum(max(counts, key=lambda label: score(text, label)) == gold for text, gold in test) / len(test)


def curve(accuracy: Callable[[list[int]], float], train: list[ClassificationExample], per_class: list[str],
          seeds: list[int]) -> str:
    """'16: 0.561  64: 0.648  all: 0.739': accuracy(rows of train) at each label count, on finetune_cls.py's
    --per-class subsets, averaged over the seeds (all labels: one subset, so one seed)."""
    position = {id(e): i for i, e in enumerate(train)}
    scores = []
    for n in per_class:
        accs = [accuracy(list(range(len(train))) if n == "all" else
                         [position[id(e)] for e in per_class_subset(train, int(n), seed)])
                for seed in (seeds if n != "all" else seeds[:1])]
        scores.append(f"{n}: {sum(accs) / len(accs):.3f}")
    return "  ".join(scores)


def load_encoder(name: str, first: str) -> BertModel:
    if name == "random":
        torch.manual_seed(0)
        return BertModel(BertConfig.from_hf_dict(read_json(os.path.join(first, "config.json"))))
    return BertModel.from_pretrained(name)


def labels_per_class(value: str) -> str:
    """--per-class: a positive count, or 'all'."""
    if value != "all" and not (value.isdigit() and int(value) > 0):
        raise argparse.ArgumentTypeError(f"{value!r} is neither a positive count nor 'all'")
    return value


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="+",
                   help="model folders (config.json, weights, vocab.txt), 'random', or 'naive-bayes'")
    p.add_argument("--train", required=True, help="training file, as finetune_cls.py reads it (one text column)")
    p.add_argument("--valid", required=True, help="validation file: chooses the probe's weight decay")
    p.add_argument("--test", required=True, help="test file: the accuracy printed")
    p.add_argument("--per-class", nargs="+", default=["16", "64", "all"], type=labels_per_class,
                   help="train examples per class, or 'all' (default: 16 64 all)")
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3],
                   help="seeds of the --per-class subsets, finetune_cls.py's (default: 1 2 3)")
    p.add_argument("--max-length", type=int, default=64, help="tokens per text, [CLS] and [SEP] included")
    args = p.parse_args(argv)
    folders = [m for m in args.models if m not in ("random", "naive-bayes")]
    if not folders and "random" in args.models:
        p.error("give a model folder with 'random' (its size and vocabulary make the random encoder)")
    try:
        tokenizer = load_tokenizer(folders[0]) if folders else None
        splits = {k: read_classification_file(getattr(args, k)) for k in ("train", "valid", "test")}
        label_map = LabelMap.from_examples(splits["train"])
        encoded = {k: encode_classification(rows, tokenizer, label_map, args.max_length)
                   for k, rows in splits.items()} if tokenizer else {}
    except (CheckpointError, DataError, OSError) as e:
        raise SystemExit(f"error: {e}")
    train = splits["train"]
    for name in args.models:
        if name == "naive-bayes":
            pairs = {k: [(e.text_a, e.label) for e in rows] for k, rows in splits.items()}
            nb = lambda rows: naive_bayes([pairs["train"][i] for i in rows], pairs["test"])
            print(f"{name}  chars+pairs  test acc  " + curve(nb, train, args.per_class, args.seeds), flush=True)
            continue
        try:
            if name != "random" and load_tokenizer(name).vocab != tokenizer.vocab:
                print(f"{name}: skipped, its vocabulary is not {folders[0]}'s")
                continue
            model = load_encoder(name, folders[0])
        except (CheckpointError, OSError) as e:
            raise SystemExit(f"error: {e}")
        read = {k: features(model, rows, tokenizer.pad_token_id) for k, rows in encoded.items()}
        for f, feature in enumerate(("[CLS]", "mean")):
            split = {k: (columns[f], columns[2]) for k, columns in read.items()}  # (features, labels)
            fit = lambda rows: probe((split["train"][0][rows], split["train"][1][rows]), split["valid"],
                                     split["test"], len(label_map))
            print(f"{name}  {feature:5s}  test acc  " + curve(fit, train, args.per_class, args.seeds), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
