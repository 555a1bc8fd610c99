"""Classification files, label maps and dynamically padded batches of data.py."""

import json
import os

import numpy as np
import pytest
import torch

import data


def write(folder, name, text):
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def test_read_formats(tmp_path):
    single = write(tmp_path, "sst.tsv", "sentence\tlabel\nit is good .\t1\nit is bad\t0\n\n")
    ex = data.read_classification_file(single)
    assert [(e.text_a, e.text_b, e.label, e.line) for e in ex] == [("it is good .", None, "1", 2),
                                                                    ("it is bad", None, "0", 3)]
    pairs = write(tmp_path, "mrpc.tsv", "idx\tsentence1\tsentence2\tlabel\n0\ta cat\ta \"dog\"\t1\n")
    ex = data.read_classification_file(pairs)
    assert [(e.text_a, e.text_b, e.label) for e in ex] == [("a cat", 'a "dog"', "1")]
    qqp = write(tmp_path, "qqp.tsv", "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n7\t1\t2\tWhy?\tHow?\t0\n")
    ex = data.read_classification_file(qqp, label_column="is_duplicate")
    assert (ex[0].text_a, ex[0].text_b, ex[0].label) == ("Why?", "How?", "0")
    csv_path = write(tmp_path, "d.csv", 'text,label\n"hello, world",pos\n"multi\nline",neg\n')
    assert [(e.text_a, e.label, e.line) for e in data.read_classification_file(csv_path)] == [
        ("hello, world", "pos", 2), ("multi\nline", "neg", 4)]
    jsonl = write(tmp_path, "d.jsonl", '{"premise": "p1", "hypothesis": "h1", "label": 2}\n\n{"premise": "p2", '
                                       '"hypothesis": "h2", "label": "entailment"}\n')
    ex = data.read_classification_file(jsonl)
    assert [(e.text_a, e.text_b, e.label, e.line) for e in ex] == [("p1", "h1", "2", 1),
                                                                    ("p2", "h2", "entailment", 3)]
    custom = write(tmp_path, "c.tsv", "a\tb\tc\ty\nx1\tx2\tx3\tl\n")
    ex = data.read_classification_file(custom, text_columns=["c"], label_column="y")
    assert (ex[0].text_a, ex[0].text_b, ex[0].label) == ("x3", None, "l")


@pytest.mark.parametrize("name, content, message", [
    ("missing.tsv", None, r"missing.tsv: no such file"),
    ("empty.tsv", "", r"empty.tsv: file is empty"),
    ("header_only.tsv", "sentence\tlabel\n", r"header_only.tsv: no examples"),
    ("cols.tsv", "sentence\tlabel\nok\t1\nbad\t1\textra\n",
     r"cols.tsv:3: expected 2 columns \(sentence, label\), got 3"),
    ("cols.csv", "text,label\nok,1\nbad\n", r"cols.csv:3: expected 2 columns \(text, label\), got 1"),
    ("json.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": \n', r"json.jsonl:2: bad JSON"),
    ("list.jsonl", '[1, 2]\n', r"list.jsonl:1: expected a JSON object"),
    ("nolabel.tsv", "sentence\tgold\nok\t1\n", r"nolabel.tsv:2: no column 'label'"),
    ("notext.jsonl", '{"text": "a", "label": 1}\n{"label": 0}\n', r"notext.jsonl:2: no column 'text'"),
    ("emptylabel.tsv", "sentence\tlabel\nok\t1\nfine\t \n", r"emptylabel.tsv:3: empty label"),
    ("ambiguous.tsv", "a\tb\tc\tlabel\n1\t2\t3\t0\n", r"ambiguous.tsv: cannot tell which columns"),
    ("utf.tsv", b"sentence\tlabel\nok\t1\nbad \xff\t0\n", r"utf.tsv:3: not valid UTF-8"),
    ("data.txt", "sentence\tlabel\n", r"data.txt: unknown format"),
    ("binary.tsv", b"sentence\tlabel\nok\t1\n\x00\x00\t0\n", r"binary.tsv:3: a binary file"),
])
def test_read_errors(tmp_path, name, content, message):
    path = os.path.join(tmp_path, name) if content is None else write(tmp_path, name, content)
    with pytest.raises(data.DataError, match=message) as e:
        data.read_classification_file(path)
    assert "\n" not in str(e.value) and name in str(e.value)


@pytest.mark.parametrize("name, sep", [("long.tsv", "\t"), ("long.csv", ",")])
def test_a_field_longer_than_csvs_own_limit_is_read(tmp_path, name, sep):
    """csv refuses fields over 128 KB by default; a review or an article can be longer."""
    long = "word " * 40_000  # 200 KB
    path = write(tmp_path, name, f"text{sep}label\nshort{sep}a\n{long}{sep}b\n")
    examples = data.read_classification_file(path)
    assert [e.label for e in examples] == ["a", "b"] and examples[1].text_a == long


def test_label_map(tmp_path):
    ex = lambda labels: [data.ClassificationExample("t", None, l, i + 2, "train.tsv") for i, l in enumerate(labels)]
    lm = data.LabelMap.from_examples(ex(["neg", "pos", "neg", "neutral"]))
    assert lm.labels == ["neg", "neutral", "pos"] and len(lm) == 3 and lm.encode("pos", "x") == 2
    assert data.LabelMap.from_examples(ex(["10", "2", "1"])).labels == ["1", "2", "10"]  # numeric order
    path = str(tmp_path / "labels.json")
    lm.save(path)
    assert data.LabelMap.load(path).labels == lm.labels and json.load(open(path))["labels"] == lm.labels
    with pytest.raises(data.DataError, match=r"dev.tsv:5: unknown label 'maybe'"):
        lm.encode("maybe", "dev.tsv:5")
    with pytest.raises(data.DataError, match="bad.json: not a label map"):
        data.LabelMap.load(write(tmp_path, "bad.json", "[1]"))


@pytest.fixture
def tokenizer(tmp_path):
    texts = ["the cat sat on the mat.", "the dog ate the bone.", "a bird sang in the tree."] * 3
    path = str(tmp_path / "v" / "vocab.txt")
    data.train_wordpiece_vocab(texts, 200, path)
    return data.BertTokenizer(path)


def test_encode_classification(tokenizer, tmp_path):
    examples = [data.ClassificationExample("the cat sat", "the dog", "pos", 2, "train.tsv"),
                data.ClassificationExample("a bird " * 50, None, "neg", 3, "train.tsv")]
    lm = data.LabelMap.from_examples(examples)
    encoded = data.encode_classification(examples, tokenizer, lm, max_length=16)
    assert encoded[0] == dict(tokenizer.encode("the cat sat", "the dog", max_length=16), label=1)
    assert len(encoded[1]["input_ids"]) == 16 and encoded[1]["label"] == 0
    with pytest.raises(data.DataError, match="dev.tsv:9: unknown label 'meh'"):
        data.encode_classification([data.ClassificationExample("x", None, "meh", 9, "dev.tsv")], tokenizer, lm)


def make_encoded(n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        length = int(rng.integers(3, 120))
        ids = [2] + [10 + i % 50] * (length - 2) + [3]
        split = int(rng.integers(1, length))
        segments = [0] * split + [1] * (length - split)
        out.append({"input_ids": ids, "token_type_ids": segments, "label": i % 3, "i": i})
    return out


@pytest.mark.parametrize("bucket_size", [None, 4])
def test_batches_padding(bucket_size):
    encoded = make_encoded(203)
    seen = []
    for batch in data.classification_batches(encoded, 16, pad_token_id=0, shuffle=True, seed=1,
                                             bucket_size=bucket_size):
        assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
        assert all(v.dtype == torch.int64 for v in batch.values())
        lengths = batch["attention_mask"].sum(1)
        assert batch["input_ids"].shape[1] == int(lengths.max())  # padded to the longest of the batch only
        for b in range(len(lengths)):
            n = int(lengths[b])
            ids = batch["input_ids"][b, :n].tolist()
            match = [e for e in encoded if e["input_ids"] == ids and e["label"] == int(batch["labels"][b])
                     and e["token_type_ids"] == batch["token_type_ids"][b, :n].tolist()]
            assert match
            seen.append(match[0]["i"])
            assert not batch["input_ids"][b, n:].any() and not batch["token_type_ids"][b, n:].any()
    assert sorted(seen) == list(range(203))  # every example exactly once


def test_bucketing_reduces_padding():
    encoded = make_encoded(1000, seed=2)

    def padding(bucket_size):
        total = 0
        for batch in data.classification_batches(encoded, 32, 0, shuffle=True, seed=3, bucket_size=bucket_size):
            total += int((batch["attention_mask"] == 0).sum())
        return total
    assert padding(10) < 0.2 * padding(None)
    orders = [[tuple(b["labels"].tolist()) for b in data.classification_batches(encoded, 32, 0, True, seed)]
              for seed in (1, 1, 2)]
    assert orders[0] == orders[1] != orders[2]  # deterministic per seed
    plain = list(data.classification_batches(encoded, 32, 0, shuffle=False, seed=0, bucket_size=None))
    assert [int(x) for b in plain for x in b["labels"]] == [e["label"] for e in encoded]  # original order
