"""finetune_ner.py end to end on tagged data the tests write: the tutorial's line, TensorBoard, the export
(loaded by transformers with the same logits), predict's entities and offsets, long sentences, bad input."""

import json
import random
import re

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import finetune_ner
import ner
from model import BertConfig, BertForPreTraining

NAMES = ["ann", "bob", "carla", "dieter", "emma"]
SURNAMES = ["lee", "kim", "roth"]
PLACES = ["paris", "rome", "oslo", "lima", "kyiv"]
FILLER = ["met", "in", "the", "city", "of", "and", "visited", "today", "with", "friends"]


def toy_sentences(n: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """Sentences whose people and places are told apart by their words: a task a tiny model learns."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words, tags, previous = [], [], "O"
        for _ in range(rng.randint(3, 8)):
            kind = rng.choice(["PER", "LOC", "O", "O"])
            kind = "O" if kind == previous else kind  # two people in a row would be one two-word person
            previous = kind
            if kind == "PER":
                name = [rng.choice(NAMES)] + ([rng.choice(SURNAMES)] if rng.random() < 0.5 else [])
                words += name
                tags += ["B-PER"] + ["I-PER"] * (len(name) - 1)
            elif kind == "LOC":
                words.append(rng.choice(PLACES))
                tags.append("B-LOC")
            else:
                words.append(rng.choice(FILLER))
                tags.append("O")
        out.append((words, tags))
    return out


def write_conll(path, sentences):
    path.write_text("".join("".join(f"{w} {t}\n" for w, t in zip(*s)) + "\n" for s in sentences))
    return str(path)


@pytest.fixture
def env(tmp_path):
    """A pretrained tiny BERT as train_mlm.py exports it (runs/pre/final), toy CoNLL files, and flags."""
    chars = "abcdefghijklmnopqrstuvwxyz"
    tokens = list(dict.fromkeys(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *("##" + c for c in chars),
                                 *NAMES, *SURNAMES, *PLACES, *FILLER]))
    (tmp_path / "vocab.txt").write_text("\n".join(tokens) + "\n")
    final = tmp_path / "runs" / "pre" / "final"
    final.mkdir(parents=True)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokens), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertForPreTraining(config).save_pretrained(str(final), vocab_file=str(tmp_path / "vocab.txt"))
    (final / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    files = {split: write_conll(tmp_path / f"{split}.txt", toy_sentences(n, seed))
             for split, n, seed in (("train", 200, 0), ("valid", 40, 1), ("test", 40, 2))}
    flags = ["--out-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"), "--no-progress",
             "--batch-size", "16", "--log-interval", "2"]
    return tmp_path, files, flags


def run_dirs(tmp_path):
    return sorted(p for p in (tmp_path / "runs").iterdir() if p.name.startswith("ner-"))


def test_fine_tunes_logs_saves_and_predicts(env, capsys):
    transformers = pytest.importorskip("transformers")
    tmp_path, files, flags = env
    assert finetune_ner.main(["--train", files["train"], "--valid", files["valid"], "--test", files["test"],
                              "--epochs", "4", "--lr", "3e-3", *flags]) == 0
    out = capsys.readouterr().out
    assert re.findall(r"^Epoch (\d): Train Loss = \d+\.\d{4}, Valid Loss = \d+\.\d{4}, Valid F1 = \d\.\d{4}$", out, re.M) \
        == ["1", "2", "3", "4"]
    (run,) = run_dirs(tmp_path)
    results = json.loads((run / "results.json").read_text())
    assert results["split"] == "test" and results["f1"] > 0.9  # a separable task, learned
    # the report's scores are the field's, recomputed from the saved model's tags
    ea = EventAccumulator(str(run), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    ea.Reload()
    tags = ea.Tags()
    assert {"Loss/train", "Loss/valid", "F1/valid", "F1/valid_PER", "F1/valid_LOC", "Precision/valid",
            "Recall/valid"} <= set(tags["scalars"])
    assert "Entities/confusion" in tags["images"]
    assert {"Entities/probes/text_summary", "Entities/confusion_table/text_summary"} <= set(tags["tensors"])
    # the export: transformers' BertForTokenClassification computes the same logits
    model_dir = run / "model"
    assert ner.load_labels(str(model_dir / "labels.json")) == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    ours = finetune_ner.BertForTokenClassification.from_pretrained(str(model_dir)).eval()
    hf = transformers.BertForTokenClassification.from_pretrained(model_dir).eval()
    ids = torch.randint(5, 60, (2, 9))
    with torch.no_grad():
        assert (ours(ids)[1] - hf(ids).logits).abs().max() < 1e-5
    # predict: entities with their character offsets in the text
    text = "Ann Lee visited Rome today"
    assert finetune_ner.main(["predict", "--model", str(model_dir), "--json", text]) == 0
    found = json.loads(capsys.readouterr().out)["entities"]
    assert [(e["type"], e["text"]) for e in found] == [("PER", "Ann Lee"), ("LOC", "Rome")]
    assert all(text[e["start"]:e["end"]] == e["text"] and 0 < e["score"] <= 1 for e in found)


def test_compare_trains_the_pretrained_model_and_its_scratch_baseline_side_by_side(env, capsys):
    tmp_path, files, flags = env
    assert finetune_ner.main(["--train", files["train"], "--valid", files["valid"], "--test", files["test"],
                              "--compare", "--epochs", "1", *flags]) == 0
    out = capsys.readouterr().out
    (run,) = run_dirs(tmp_path)
    assert "init: the pretrained encoder of " in out and "init: random init (the size of " in out
    results = json.loads((run / "results.json").read_text())
    p, r = results["pretrained"], results["scratch"]
    assert results["difference"]["f1"] == pytest.approx(p["f1"] - r["f1"])
    assert p["init"].startswith("the pretrained encoder") and r["init"].startswith("random init")
    assert re.search(r"entity f1 +" + r" +".join(re.escape(f"{x:{f}}") for x, f in
                                                 ((p["f1"], ".4f"), (r["f1"], ".4f"), (p["f1"] - r["f1"], "+.4f"))), out)
    for name in ("pretrained", "scratch"):  # sibling TensorBoard runs, each with its model
        assert (run / name / "model" / "labels.json").is_file() and list((run / name).glob("events.out.tfevents.*"))
    # the baseline is the pretrained model's size, with its vocabulary
    pre, base = (json.loads((run / n / "model" / "config.json").read_text()) for n in ("pretrained", "scratch"))
    assert {k: pre[k] for k in ("hidden_size", "num_hidden_layers", "vocab_size")} == \
        {k: base[k] for k in ("hidden_size", "num_hidden_layers", "vocab_size")}
    assert (run / "pretrained" / "model" / "vocab.txt").read_text() == (run / "scratch" / "model" / "vocab.txt").read_text()


def test_a_sentence_of_ten_thousand_words_is_read_in_windows_not_cut(env, capsys):
    tmp_path, files, flags = env
    long = (["ann", "met", "bob", "in", "rome"] * 2000, ["B-PER", "O", "B-PER", "O", "B-LOC"] * 2000)
    train = write_conll(tmp_path / "long.txt", toy_sentences(50, 3) + [long])
    assert finetune_ner.main(["--train", train, "--valid", files["valid"], "--epochs", "1", "--max-length", "32",
                              *flags]) == 0
    out = capsys.readouterr().out
    assert "note: 1 sentences longer than windows of 32 word pieces are read in overlapping windows" in out


def test_windows_are_the_length_the_model_was_pretrained_at_and_predict_reads_with_them(env, capsys, monkeypatch):
    """A train_mlm.py export says its --seq-len (model_max_length): the windows take it, for the scratch baseline
    too, the model saves it, and predict reads with it; --max-length overrides."""
    tmp_path, files, flags = env
    settings = tmp_path / "runs" / "pre" / "final" / "tokenizer_config.json"
    settings.write_text(json.dumps({"do_lower_case": True, "model_max_length": 12}))
    seen, windows = [], finetune_ner.ner.windows
    monkeypatch.setattr(finetune_ner.ner, "windows",
                        lambda x, tok, ids, n, *rest: seen.append(n) or windows(x, tok, ids, n, *rest))
    assert finetune_ner.main(["--train", files["train"], "--valid", files["valid"], "--compare", "--epochs", "1",
                              *flags]) == 0
    assert set(seen) == {12}
    (run,) = run_dirs(tmp_path)
    for name in ("pretrained", "scratch"):
        assert json.loads((run / name / "model" / "tokenizer_config.json").read_text())["model_max_length"] == 12
    seen.clear()
    assert finetune_ner.main(["predict", "--model", str(run / "pretrained"), "ann met bob"]) == 0
    assert seen == [12]
    seen.clear()
    assert finetune_ner.main(["--train", files["train"], "--epochs", "1", "--max-length", "20", *flags]) == 0
    assert set(seen) == {20}


def test_viterbi_never_emits_an_i_tag_not_begun_and_argmax_may(env):
    """Decoding the same scores both ways: the constrained path is valid BIO; on scores that favour an I- at the
    start of an entity, the greedy one is not."""
    labels = ["O", "B-PER", "I-PER"]
    scores = [torch.log_softmax(torch.tensor([[0.1, 1.0, 2.0], [3.0, 0.0, 0.0]]), -1).numpy()]
    viterbi, = finetune_ner.decode(scores, labels, "viterbi")
    argmax, = finetune_ner.decode(scores, labels, "argmax")
    assert argmax == ["I-PER", "O"] and viterbi == ["B-PER", "O"]


def bad_inputs(tmp_path, files):
    bad = {
        "columns": "ann B-PER\nmet O extra\n",
        "scheme": "ann PERSON\n",
        "begun": "ann B-PER\nrome I-LOC\n",
        "empty": "",
        "unseen": "zed B-ZZZ\n",
        "broken.jsonl": "not json\n",
        "lengths.jsonl": '{"tokens": ["a"], "tags": ["O", "B-PER"]}\n',
        "span.jsonl": '{"text": "ann", "entities": [[0, 9, "PER"]]}\n',
    }
    names = {k: k if k.endswith(".jsonl") else f"{k}.txt" for k in bad}
    paths = {k.replace(".jsonl", ""): str(tmp_path / names[k]) for k in bad}
    for k, content in bad.items():
        (tmp_path / names[k]).write_text(content)
    (tmp_path / "binary.txt").write_bytes(b"ann met\n\x00\x01\n")
    return dict(files, tmp=str(tmp_path), **paths)


BAD = [  # (arguments, exit code, what the one line must name)
    (["--train", "{columns}"], 1, "columns.txt:2: expected 2 columns, as the first line, got 3"),
    (["--train", "{scheme}"], 1, "scheme.txt:1: tag 'PERSON' is not a BIO tag"),
    (["--train", "{begun}"], 1, "begun.txt:1: I-LOC of a type not begun (after B-PER"),
    (["--train", "{empty}"], 1, "empty.txt: file is empty"),
    (["--train", "{tmp}/nosuch.txt"], 1, "nosuch.txt: no such file"),
    (["--train", "{broken}"], 1, "broken.jsonl:1: bad JSON"),
    (["--train", "{lengths}"], 1, "lengths.jsonl:1: 'tokens' and 'tags' must be lists of strings of the same length"),
    (["--train", "{span}"], 1, "span.jsonl:1: entity [0, 9, 'PER'] is not [start, end, type] within the text"),
    (["--train", "{train}", "--valid", "{unseen}"], 1, "unseen.txt:1: entity type ZZZ never occurs in"),
    (["--train", "{train}", "--tag-column", "5"], 1, "--tag-column 5 is outside the file's 2 columns"),
    (["--train", "{train}", "--init", "{tmp}/nosuchrun"], 1, "nosuchrun: not a checkpoint directory"),
    (["--train", "{train}", "--run-name", "../x"], 2, "a run name is one folder name"),
    (["--train", "{train}", "--epochs", "0"], 2, "--epochs must be positive, got 0"),
    (["--train", "{train}", "--dropout", "-0.1"], 2, "--dropout must be in [0, 1), got -0.1"),
    (["--train", "{train}", "--scheme", "XYZ"], 2, "invalid choice: 'XYZ'"),
    (["--train", "{train}", "--stride", "0"], 2, "--stride in [1, --max-length - 2]"),
    (["predict", "--model", "{tmp}/nosuch", "hi"], 1, "nosuch: no such folder"),
]


@pytest.mark.parametrize("argv, code, fragment", BAD, ids=[" ".join(b[0][:3]) for b in BAD])
def test_bad_input_is_one_line_and_leaves_nothing(env, capsys, argv, code, fragment):
    tmp_path, files, flags = env
    paths = bad_inputs(tmp_path, files)
    argv = [a.format(**paths) for a in argv] + (flags if argv[0] != "predict" else [])
    try:
        got = finetune_ner.main(argv)
    except SystemExit as e:
        got = e.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error: " in line]
    assert got == code and len(lines) == 1 and fragment in lines[0] and "Traceback" not in err, err
    assert run_dirs(tmp_path) == [] and not (tmp_path / "x").exists()


def test_predict_refuses_a_tag_set_that_is_not_the_models_and_a_binary_file(env, capsys):
    tmp_path, files, flags = env
    assert finetune_ner.main(["--train", files["train"], "--epochs", "1", *flags]) == 0
    (run,) = run_dirs(tmp_path)
    capsys.readouterr()
    bad_inputs(tmp_path, files)
    assert finetune_ner.main(["predict", "--model", str(run), "--file", str(tmp_path / "binary.txt")]) == 1
    assert "binary.txt:2: a binary file" in capsys.readouterr().err
    (run / "model" / "labels.json").write_text(json.dumps({"labels": ["O", "B-ORG", "I-ORG"]}))
    assert finetune_ner.main(["predict", "--model", str(run), "hi"]) == 1
    assert "the tag set does not belong to this model" in capsys.readouterr().err

