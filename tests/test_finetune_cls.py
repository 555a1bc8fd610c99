"""finetune_cls.py: metrics, the training loop end to end on tiny data, TensorBoard output, the saved
model (also loaded by transformers), predict, GLUE download and caching, the docsource splits, and
every bad input the issue lists. Tiny models and data built here: the whole file runs in seconds."""

import functools
import hashlib
import http.server
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import zipfile

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import finetune_cls
import pretrained
import tasks
from finetune_cls import classification_metrics, confusion_matrix, main
from training import Trainer
from visuals import confusion_image
import data
from model import BertConfig, BertForPreTraining, BertForSequenceClassification

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POSITIVE = ["good", "great", "fine", "lovely", "nice"]
NEGATIVE = ["bad", "awful", "poor", "ugly", "sad"]
FILLER = ["the", "movie", "was", "really", "quite", "and", "plot", "acting", "a", "story", "this", "film"]
WORDS = POSITIVE + NEGATIVE + FILLER + ["is", "what", "question", "answer"]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a busy CI machine OpenMP threads spin-wait."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def sentence(rng, label):
    words = rng.sample(FILLER, 4) + [rng.choice(POSITIVE if label == "pos" else NEGATIVE)]
    rng.shuffle(words)
    return " ".join(words)


def write_tsv(path, rows, header=("sentence", "label")):
    with open(path, "w", encoding="utf-8") as f:
        f.write("\t".join(header) + "\n" + "".join("\t".join(r) + "\n" for r in rows))
    return str(path)


def toy_rows(n, seed):
    rng = random.Random(seed)
    return [(sentence(rng, label), label) for label in ("pos", "neg") * (n // 2)]


def write_vocab(path):
    chars = "abcdefghijklmnopqrstuvwxyz"
    tokens = list(dict.fromkeys(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *("##" + c for c in chars), *WORDS]))
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(tokens) + "\n")
    return len(tokens)


def tiny_config(vocab_size):
    return BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=64)


@pytest.fixture
def env(tmp_path):
    """A pretrained tiny BERT as train_mlm.py exports it (runs/pre/final), toy TSV files, and the
    flags that keep every run inside tmp_path."""
    final = tmp_path / "runs" / "pre" / "final"
    final.mkdir(parents=True)
    n = write_vocab(tmp_path / "vocab.txt")
    torch.manual_seed(0)
    BertForPreTraining(tiny_config(n)).save_pretrained(str(final), vocab_file=str(tmp_path / "vocab.txt"))
    (final / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    files = {split: write_tsv(tmp_path / f"{split}.tsv", toy_rows(n_rows, seed))
             for split, n_rows, seed in (("train", 64, 0), ("valid", 24, 1), ("test", 24, 2))}
    flags = ["--out-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"), "--epochs", "1",
             "--batch-size", "8", "--log-interval", "2", "--no-progress"]
    return tmp_path, files, flags


def run_dirs(tmp_path):
    return sorted(p for p in (tmp_path / "runs").iterdir() if p.name.startswith("cls-"))


# ----------------------------------------------------------------------------- metrics


def test_metrics_match_hand_computed_values():
    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2, 2, 2, 0])
    cm = confusion_matrix(y_true, y_pred, 3)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [1, 0, 3]]
    m = classification_metrics(cm)
    assert m["acc"] == pytest.approx(6 / 9)
    # per-class F1 = 2tp / (support + predicted): 4/6, 2/4, 6/8
    assert m["f1"] == pytest.approx((4 / 6 + 2 / 4 + 6 / 8) / 3)
    # Gorodkin's R_K: (c*s - sum p_k t_k) / sqrt((s^2 - sum p_k^2)(s^2 - sum t_k^2)),
    # c=6, s=9, t=(3,2,4), p=(3,2,4): (54 - 29) / (81 - 29)
    assert m["mcc"] == pytest.approx(25 / 52)


def test_binary_mcc_is_the_textbook_formula_and_degenerate_cases_are_zero():
    tp, fn, fp, tn = 5, 2, 1, 7
    cm = np.array([[tn, fp], [fn, tp]])
    expected = (tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert classification_metrics(cm)["mcc"] == pytest.approx(expected)
    constant = classification_metrics(np.array([[4, 0], [3, 0]]))  # always predicts class 0
    assert constant["mcc"] == 0.0 and constant["acc"] == pytest.approx(4 / 7)
    # a class absent from labels and predictions does not drag macro-F1 down
    assert classification_metrics(np.array([[2, 0, 0], [0, 2, 0], [0, 0, 0]]))["f1"] == 1.0


def test_confusion_image_is_an_hwc_heat_map():
    img = confusion_image(np.array([[5, 0], [1, 4]]), cell=10)
    assert img.shape == (20, 20, 3) and img.dtype == np.uint8
    assert img[5, 5].tolist() == [8, 48, 107]  # the whole row: darkest
    assert img[5, 15].tolist() == [255, 255, 255]  # nothing: white


# ----------------------------------------------------------------------------- training end to end


def test_finetune_from_newest_pretraining_run_logs_saves_and_predicts(env, capsys, caplog):
    tmp_path, files, flags = env
    assert main([*flags, "--train", files["train"], "--valid", files["valid"], "--test", files["test"],
                 "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert f"init: the pretrained encoder of {tmp_path / 'runs' / 'pre' / 'final'}, with a new classifier head" in out
    assert not [r.message for r in caplog.records if r.levelname == "WARNING"]  # nothing that reads as an error
    epochs = re.findall(r"^Epoch (\d+): Train Loss = \d+\.\d{4}, Valid Loss = \d+\.\d{4}, Valid Acc = \d\.\d{4}$",
                        out, re.M)
    assert epochs == ["1", "2"]
    assert "test set (24 examples)" in out and "MCC" in out

    (run,) = run_dirs(tmp_path)
    model_dir = run / "model"
    assert {p.name for p in model_dir.iterdir()} == {"config.json", "model.safetensors", "vocab.txt",
                                                   "tokenizer_config.json", "labels.json"}
    assert json.loads((model_dir / "labels.json").read_text()) == {"labels": ["neg", "pos"]}
    assert json.loads((model_dir / "config.json").read_text())["id2label"] == {"0": "neg", "1": "pos"}
    results = json.loads((run / "results.json").read_text())
    assert results["split"] == "test" and np.array(results["confusion_matrix"]).sum() == 24
    assert len(results["history"]) == 2
    # the reported metrics are those of the reported confusion matrix (hand-checked in test_metrics_...)
    assert classification_metrics(np.array(results["confusion_matrix"])) == pytest.approx(
        {k: results[k] for k in ("acc", "f1", "mcc")})
    assert not (tmp_path / "runs" / "pre" / "final" / "labels.json").exists()  # never confused with pretraining

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ea = EventAccumulator(str(run), size_guidance={"tensors": 0, "scalars": 0, "images": 0})
    ea.Reload()
    tags = ea.Tags()
    for tag in ("Loss/train", "Loss/valid", "Accuracy/valid", "Optim/lr", "Optim/grad_norm", "F1/valid",
                "Perf/samples_per_sec"):
        assert tag in tags["scalars"], tag
    assert len(ea.Scalars("Accuracy/valid")) == 2
    assert {"PR/neg", "PR/pos"} <= set(tags["tensors"])
    assert "Confusion/valid" in tags["images"]
    assert any(t.startswith("Misclassified/valid") for t in tags["tensors"])
    projector = (run / "projector_config.pbtxt").read_text()
    assert "CLS/valid" in projector
    meta = next(run.glob("*/CLS*/metadata.tsv")).read_text().splitlines()
    assert meta[0] == "label\tpredicted\ttext" and len(meta) == 25
    hp = EventAccumulator(str(run / "hparams"))
    hp.Reload()
    assert "hparam/test_acc" in hp.Tags()["scalars"]

    # predict: arguments and a file, plain and JSON
    texts = tmp_path / "texts.txt"
    texts.write_text("the movie was good\n\nthe film was awful\n")
    assert main(["predict", "--model", str(model_dir), "a lovely story", "--file", str(texts)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert main(["predict", "--model", str(model_dir), "--json", "a lovely story", "--file", str(texts)]) == 0
    records = [json.loads(r) for r in capsys.readouterr().out.splitlines()]
    for line, record, text in zip(lines, records, ["a lovely story", "the movie was good", "the film was awful"]):
        label, p, echoed = line.split("\t")  # the most probable label and its probability, as --json gives them
        most_probable = max(record["probabilities"], key=record["probabilities"].get)
        assert (label, echoed) == (record["label"], text) == (most_probable, record["text"])
        assert float(p) == pytest.approx(record["probabilities"][label], abs=1e-4)
    assert main(["predict", "--model", str(run), "--json", "a sad plot"]) == 0  # the run folder works too
    record = json.loads(capsys.readouterr().out)
    assert set(record["probabilities"]) == {"neg", "pos"}
    assert sum(record["probabilities"].values()) == pytest.approx(1, abs=1e-4)
    # the plain line is the JSON's most probable label and its probability, which the model's own
    # logits give (softmax of the classifier run by hand)
    assert main(["predict", "--model", str(model_dir), "--json", "the film was awful"]) == 0
    record = json.loads(capsys.readouterr().out)
    best = max(record["probabilities"], key=record["probabilities"].get)
    label, p, _ = lines[2].split("\t")
    assert label == best == record["label"] and float(p) == pytest.approx(record["probabilities"][best], abs=1e-3)
    model = BertForSequenceClassification.from_pretrained(str(model_dir)).eval()
    tok = data.BertTokenizer(str(model_dir / "vocab.txt"))
    with torch.no_grad():
        logits = model(torch.tensor([tok.encode("the film was awful")["input_ids"]]))[1][0]
    probs = torch.softmax(logits, -1).tolist()
    labels = [model.config.id2label[i] for i in range(len(probs))]
    assert dict(zip(labels, probs)) == pytest.approx(record["probabilities"], abs=1e-4)


def test_note_when_examples_are_longer_than_the_pretraining_sequences(env, capsys):
    tmp_path, files, flags = env
    settings = tmp_path / "runs" / "pre" / "final" / "tokenizer_config.json"
    settings.write_text(json.dumps({"do_lower_case": True, "model_max_length": 6}))
    data = ["--train", str(files["train"]), "--valid", str(files["valid"]), *flags]
    assert main(data) == 0
    note = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert len(note) == 1 and "pretrained on sequences of at most 6 tokens" in note[0] and "of 64 train" in note[0]
    assert main([*data, "--max-length", "6"]) == 0  # truncated to the pretraining length: nothing to say
    assert "note:" not in capsys.readouterr().out


def test_a_model_pretrained_without_dropout_fine_tunes_with_the_dropout_asked_for(env, capsys, monkeypatch):
    """--dropout (BERT's 0.1) whatever the checkpoint's config says: train_mlm.py --dropout 0 exports 0."""
    tmp_path, files, flags = env
    config = tmp_path / "runs" / "pre" / "final" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "hidden_dropout_prob": 0.0,
                                  "attention_probs_dropout_prob": 0.0}))
    seen, original = [], Trainer.start

    def start(model, *args, **kwargs):  # the model as training starts: every dropout rate in it
        seen.append(sorted({m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)} | {
            m.dropout_p for m in model.modules() if hasattr(m, "dropout_p")}))
        return original(model, *args, **kwargs)
    monkeypatch.setattr(Trainer, "start", start)
    data = ["--train", str(files["train"]), "--valid", str(files["valid"]), *flags]
    assert main(data) == 0 and main([*data, "--dropout", "0.3"]) == 0
    assert main([*data, "--init", "scratch"]) == 0
    assert seen == [[0.1], [0.3], [0.1]]


def test_finetuning_learns_a_separable_task(env, capsys):
    tmp_path, files, flags = env
    train = write_tsv(tmp_path / "big.tsv", toy_rows(160, 3))
    flags = [f for f in flags if f != "--no-progress"]  # output to a file (captured): epoch lines, no bar
    assert main([*flags, "--train", train, "--valid", files["valid"], "--epochs", "4", "--lr", "2e-3",
                 "--patience", "2", "--metric", "f1"]) == 0
    results = json.loads((run_dirs(tmp_path)[0] / "results.json").read_text())
    assert results["split"] == "valid"  # no --test: reported on valid, and said so
    captured = capsys.readouterr()
    assert "no test set" in captured.out and "Epoch 1: Train Loss = " in captured.out
    assert "\r" not in captured.out + captured.err
    assert results["acc"] >= 0.9, results


def test_sentence_pairs_jsonl_scratch_bf16_and_pad_to_max_length(env, capsys, monkeypatch):
    tmp_path, _, flags = env
    rng = random.Random(0)
    rows = [{"question": sentence(rng, label), "answer": " ".join(rng.sample(FILLER, 3)), "y": label}
            for label in ("a", "b", "c") * 6]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    seen = []  # what the model was run with: padded to 16, under bf16 autocast
    forward = BertForSequenceClassification.forward

    def recording_forward(self, input_ids, *a, **kw):
        seen.append((input_ids.shape[1], torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return forward(self, input_ids, *a, **kw)
    monkeypatch.setattr(BertForSequenceClassification, "forward", recording_forward)
    assert main(["--train", str(path), "--text-columns", "question,answer", "--label-column", "y",
                 "--init", "scratch", "--config", "tiny", "--max-length", "16", "--pad-to-max-length",
                 "--precision", "bf16", *flags]) == 0
    assert seen and set(seen) == {(16, True, torch.bfloat16)}
    out = capsys.readouterr().out
    assert "3 classes (a, b, c)" in out and f"the vocabulary of {tmp_path / 'runs' / 'pre' / 'final'}" in out


def test_scratch_without_any_pretraining_run_trains_a_vocabulary(tmp_path, capsys):
    train = write_tsv(tmp_path / "train.tsv", toy_rows(40, 0))
    assert main(["--train", train, "--out-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"),
                 "--config", "tiny", "--epochs", "1", "--vocab-size", "200"]) == 0
    out = capsys.readouterr().out
    assert "no train_mlm.py checkpoint" in out and "WordPiece vocabulary trained on the train split" in out
    (run,) = run_dirs(tmp_path)
    vocab = (run / "model" / "vocab.txt").read_text().split()
    assert 50 < len(vocab) <= 200 and "[CLS]" in vocab


def test_hugging_face_checkpoint_in_and_out(env, capsys):
    """--init a directory written by transformers; the saved classifier loads in transformers with the
    same outputs."""
    transformers = pytest.importorskip("transformers")
    tmp_path, files, flags = env
    hf_dir = tmp_path / "hf-bert"
    cfg = transformers.BertConfig(vocab_size=write_vocab(tmp_path / "vocab.txt"), hidden_size=32,
                                  num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                  max_position_embeddings=64)
    transformers.BertForMaskedLM(cfg).save_pretrained(hf_dir)
    (hf_dir / "vocab.txt").write_text((tmp_path / "vocab.txt").read_text())  # no tokenizer_config.json
    assert main(["--train", files["train"], "--init", str(hf_dir), *flags]) == 0
    assert f"init: the pretrained encoder of {hf_dir}" in capsys.readouterr().out
    model_dir = run_dirs(tmp_path)[0] / "model"
    theirs = transformers.BertForSequenceClassification.from_pretrained(model_dir).eval()
    ours = finetune_cls.BertForSequenceClassification.from_pretrained(str(model_dir)).eval()
    ids = torch.tensor([[2, 60, 61, 62, 3]])
    with torch.no_grad():
        torch.testing.assert_close(ours(ids)[1], theirs(ids).logits, atol=1e-5, rtol=1e-4)
    assert theirs.config.id2label == {0: "neg", 1: "pos"}


# ----------------------------------------------------------------------------- the embedded task


def test_docsource_splits_by_document_balanced_and_deduplicated(tmp_path, monkeypatch):
    sources = ["python_docs", "stdlib", "torch", "numpy"]
    documents, info = [], {"sources": {}}
    for s in sources:
        docs = [[f"{s} document {d} has sentence number {i} in it." for i in range(d % 3 + 2)] for d in range(12)]
        docs[0].append("This boilerplate sentence appears in every single source.")
        documents += docs
        info["sources"][s] = {"documents": len(docs)}
    monkeypatch.setattr(tasks, "default_corpus", lambda cache_dir: (documents, info))
    monkeypatch.setattr(tasks, "DOCSOURCE_SIZES", {"train": 6, "valid": 3, "test": 3})
    task = tasks.docsource_task(str(tmp_path))
    for split, n in (("train", 6), ("valid", 3), ("test", 3)):
        examples = getattr(task, split)
        counts = {label: sum(e.label == label for e in examples) for label in tasks.DOCSOURCE_LABELS.values()}
        assert set(counts.values()) == {n}, (split, counts)
    doc_of = lambda e: e.text_a.split(" has ")[0]
    split_docs = {split: {doc_of(e) for e in getattr(task, split)} for split in ("train", "valid", "test")}
    assert not split_docs["train"] & split_docs["test"] and not split_docs["train"] & split_docs["valid"]
    assert not split_docs["valid"] & split_docs["test"]
    for label, per_split in task.info["documents_per_split"].items():  # valid and test: a fifth of the documents
        assert per_split["valid"] >= 0.2 * 12 and per_split["test"] >= 0.2 * 12, (label, per_split)
        assert sum(per_split.values()) == 12
    assert not any("boilerplate" in e.text_a for e in task.train + task.valid + task.test)
    assert all(e.label.replace("-", "").isalpha() for e in task.train)  # the source names, e.g. pytorch
    assert tasks.docsource_task(str(tmp_path)).test == task.test  # deterministic


# ----------------------------------------------------------------------------- GLUE download


def make_sst2_zip(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("SST-2/train.tsv", "sentence\tlabel\n" + "".join(
            f"{s}\t{1 if label == 'pos' else 0}\n" for s, label in toy_rows(40, 5)))
        z.writestr("SST-2/dev.tsv", "sentence\tlabel\n" + "".join(
            f"{s}\t{1 if label == 'pos' else 0}\n" for s, label in toy_rows(10, 6)))
        z.writestr("SST-2/test.tsv", "index\tsentence\n0\tno labels here\n")
    serve = tmp_path / "serve"
    serve.mkdir()
    (serve / "SST-2.zip").write_bytes(buf.getvalue())
    return serve, hashlib.sha256(buf.getvalue()).hexdigest()


@pytest.fixture
def glue_server(tmp_path):
    serve, sha = make_sst2_zip(tmp_path)
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(serve)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", sha, requests
    server.shutdown()


def test_glue_downloads_once_verifies_and_uses_official_splits(env, glue_server, capsys):
    tmp_path, _, flags = env
    url, sha, requests = glue_server
    args = ["--task", "sst2", "--glue-url", url, "--glue-sha256", sha, *flags]
    assert main(args) == 0
    assert requests == ["/SST-2.zip"]
    out = capsys.readouterr().out
    assert "36 train, 4 valid, 10 test examples" in out  # valid held out of train; dev is the test set
    assert "test set (10 examples)" in out
    cached = tmp_path / "cache" / "glue" / "SST-2"
    assert sorted(os.listdir(cached)) == ["dev.tsv", "train.tsv"]
    assert main(args) == 0  # cached: no second download
    assert requests == ["/SST-2.zip"]
    assert os.listdir(tmp_path / "cache" / "glue") == ["SST-2"]  # no temp files left


def test_a_half_filled_glue_cache_is_repaired(env, glue_server, capsys):
    tmp_path, _, flags = env
    url, sha, requests = glue_server
    cached = tmp_path / "cache" / "glue" / "SST-2"
    cached.mkdir(parents=True)
    (cached / "train.tsv").write_text("sentence\tlabel\nleft by an interrupted copy\t1\n")
    assert main(["--task", "sst2", "--glue-url", url, "--glue-sha256", sha, *flags]) == 0
    assert "incomplete (no dev.tsv); downloading the task again" in capsys.readouterr().err
    assert requests == ["/SST-2.zip"] and sorted(os.listdir(cached)) == ["dev.tsv", "train.tsv"]
    assert "left by an interrupted copy" not in (cached / "train.tsv").read_text()
    assert os.listdir(tmp_path / "cache" / "glue") == ["SST-2"]


def test_glue_checksum_mismatch_caches_nothing(env, glue_server, capsys):
    tmp_path, _, flags = env
    url, sha, requests = glue_server
    assert main(["--task", "sst2", "--glue-url", url, "--glue-sha256", "0" * 64, *flags]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("downloading ") and len(err) == 2
    assert err[1].startswith("error: ") and "does not match" in err[1] and "nothing was cached" in err[1]
    assert os.listdir(tmp_path / "cache" / "glue") == []
    assert run_dirs(tmp_path) == []
    # without --glue-sha256 the recorded checksum of the real SST-2.zip applies, which this toy zip fails
    assert main(["--task", "sst2", "--glue-url", url, *flags]) == 1
    err = capsys.readouterr().err
    assert tasks.GLUE_TASKS["sst2"].sha256 in err and "does not match" in err
    assert requests == ["/SST-2.zip", "/SST-2.zip"] and os.listdir(tmp_path / "cache" / "glue") == []


def test_the_recorded_sha256_is_what_a_download_is_checked_against(env, glue_server, monkeypatch):
    """A zip the test builds, whose digest it knows, recorded in the task table: accepted with no
    --glue-sha256; one byte changed in the table, refused."""
    import dataclasses
    tmp_path, _, flags = env
    url, sha, requests = glue_server
    monkeypatch.setitem(tasks.GLUE_TASKS, "sst2", dataclasses.replace(tasks.GLUE_TASKS["sst2"], sha256=sha))
    assert main(["--task", "sst2", "--glue-url", url, *flags]) == 0
    assert requests == ["/SST-2.zip"] and os.listdir(tmp_path / "cache" / "glue") == ["SST-2"]
    wrong = ("1" if sha[0] != "1" else "2") + sha[1:]
    monkeypatch.setitem(tasks.GLUE_TASKS, "sst2", dataclasses.replace(tasks.GLUE_TASKS["sst2"], sha256=wrong))
    for name in os.listdir(tmp_path / "cache" / "glue" / "SST-2"):
        os.remove(tmp_path / "cache" / "glue" / "SST-2" / name)
    os.rmdir(tmp_path / "cache" / "glue" / "SST-2")
    assert main(["--task", "sst2", "--glue-url", url, *flags]) == 1


def test_glue_table_records_a_sha256_for_every_task():
    for name, spec in tasks.GLUE_TASKS.items():
        assert re.fullmatch(r"[0-9a-f]{64}", spec.sha256), name
    assert len({spec.sha256 for spec in tasks.GLUE_TASKS.values()}) == len(tasks.GLUE_TASKS)


def test_glue_file_url_and_headerless_cola(tmp_path):
    buf = io.BytesIO()
    rows = "".join(f"src\t{i % 2}\t\tsentence number {i} is here .\n" for i in range(12))
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("CoLA/train.tsv", rows)
        z.writestr("CoLA/dev.tsv", rows)
    (tmp_path / "CoLA.zip").write_bytes(buf.getvalue())
    train, dev = tasks.glue_files("cola", str(tmp_path / "cache"), (tmp_path.as_uri()),
                                         hashlib.sha256(buf.getvalue()).hexdigest())
    examples = tasks.read_classification_file(train, label_column="label")
    assert len(examples) == 12 and examples[3].text_a == "sentence number 3 is here ." and examples[3].label == "1"
    assert tasks.GLUE_TASKS["cola"].metric == "mcc"


def test_glue_qqp_pairs_from_its_zip_layout(tmp_path):
    header = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
    rows = "".join(f"{i}\t{2 * i}\t{2 * i + 1}\thow do I {i}?\twhat is {i}?\t{i % 2}\n" for i in range(6))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("QQP/train.tsv", header + rows)
        z.writestr("QQP/dev.tsv", header + rows)
    (tmp_path / "QQP-clean.zip").write_bytes(buf.getvalue())
    spec = tasks.GLUE_TASKS["qqp"]
    train, _ = tasks.glue_files("qqp", str(tmp_path / "cache"), tmp_path.as_uri(),
                                       hashlib.sha256(buf.getvalue()).hexdigest())
    examples = tasks.read_classification_file(train, label_column=spec.label_column)
    assert (examples[3].text_a, examples[3].text_b, examples[3].label) == ("how do I 3?", "what is 3?", "1")


# ----------------------------------------------------------------------------- bad input


def expect_error(capsys, argv, *fragments, code=1):
    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def bad_inputs(tmp_path, files):
    """The files the bad-input cases name: each broken in one way."""
    empty = write_tsv(tmp_path / "empty.tsv", [])
    unseen = write_tsv(tmp_path / "unseen.tsv", toy_rows(4, 0) + [("the plot was fine", "neutral")])
    nolabel = write_tsv(tmp_path / "nolabel.tsv", toy_rows(4, 0), header=("sentence", "stars"))
    bad = tmp_path / "bad-ckpt"  # a vocabulary that does not belong to the checkpoint
    bad.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bad / name).write_bytes((tmp_path / "runs" / "pre" / "final" / name).read_bytes())
    (bad / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\n")
    (tmp_path / "running" / "checkpoints").mkdir(parents=True)  # a train_mlm.py run without final/ yet
    (tmp_path / "runs" / "cls-mine").mkdir()
    (tmp_path / "runs" / "cls-mine" / "keep.txt").write_text("precious")
    (tmp_path / "nothing").mkdir()
    folders = {}
    for name, change in (("huge_hidden", {"hidden_size": 10 ** 9}), ("huge_layers", {"num_hidden_layers": 10 ** 9}),
                         ("no_heads", {"num_attention_heads": 0}), ("too_big", {"hidden_size": 65536, "num_hidden_layers": 1000, "num_attention_heads": 1}),
                         ("list_config", None), ("bad_tokenizer", {}), ("payload", {}), ("classifier", {}),
                         ("bool_pad", {"pad_token_id": True}), ("nan_length", {}), ("bad_labels", {})):
        folder = tmp_path / name
        shutil.copytree(tmp_path / "runs" / "pre" / "final", folder)
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps([config] if change is None else {**config, **change}))
        folders[name] = str(folder)
    (tmp_path / "bad_tokenizer" / "tokenizer_config.json").write_text("{do_lower_case: yes")
    (tmp_path / "nan_length" / "tokenizer_config.json").write_text('{"do_lower_case": true, "model_max_length": NaN}')
    (tmp_path / "bad_labels" / "labels.json").write_text('{"labels": "ab"}')
    os.remove(tmp_path / "payload" / "model.safetensors")
    torch.save({"x": Payload(str(tmp_path / "payload-ran"))}, tmp_path / "payload" / "pytorch_model.bin")
    for name in ("classifier", "payload"):  # a fine-tuned model's folder, for predict
        (tmp_path / name / "labels.json").write_text(json.dumps({"labels": ["neg", "pos"]}))
    (tmp_path / "binary.txt").write_bytes(b"fine text\n\x00\x01\x02\xff binary\n")
    for side in ("pretrained", "scratch"):  # a --compare run: two models, neither at the top
        shutil.copytree(tmp_path / "classifier", tmp_path / "cmp" / side / "model")
    return dict(files, tmp=str(tmp_path), empty=empty, unseen=unseen, nolabel=nolabel, bad=str(bad), **folders)


class Payload:
    """Unpickled, it would call exec: weights that are a program."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


BAD_INPUT_CASES = [  # (arguments, exit code, what the line must name); {train} etc. are bad_inputs' files
    (["--train", "{tmp}/nope.tsv"], 1, ["nope.tsv: no such file"]),
    (["--train", "{train}", "--dropout", "1"], 2, ["--dropout must be in [0, 1), got 1.0"]),
    (["--train", "{train}", "--valid", "{empty}"], 1, ["empty.tsv", "no examples"]),
    (["--train", "{train}", "--test", "{unseen}"], 1, ["unseen.tsv:6", "unknown label 'neutral'"]),
    (["--train", "{nolabel}"], 1, ["nolabel.tsv", "stars"]),
    (["--train", "{train}", "--init", "{tmp}/missing"], 1, ["missing: not a checkpoint directory"]),
    (["--train", "{train}", "--init", "{bad}"], 1, ["bad-ckpt/config.json has vocab_size", "bad-ckpt/vocab.txt has 6 tokens"]),
    (["--train", "{train}", "--init", "{tmp}/running"], 1, ["running: this train_mlm.py run has no final/ export yet"]),
    (["--train", "{train}", "--init", "scratch", "--vocab", "{tmp}/v.txt"], 1, ["v.txt: no such file"]),
    (["--train", "{train}", "--compare", "--out-dir", "{tmp}/nothing"], 1, ["--compare: no pretrained model"]),
    (["predict", "--model", "{tmp}/runs/pre/final", "hi"], 1, ["final: not a fine-tuned model (no labels.json"]),
    (["--train", "{train}", "--text-columns", "review"], 1, ["train.tsv", "review"]),
    (["--train", "{train}", "--precision", "fp16", "--device", "cpu"], 2, ["--precision fp16 needs CUDA"]),
    (["--train", "{train}", "--vocab", "{tmp}/vocab.txt"], 2, ["--vocab is for --init scratch"]),
    (["--train", "{train}", "--device", "tpu9"], 2, ["--device tpu9: not a device"]),
    (["--train", "{train}", "--run-name", "cls-mine"], 2, ["cls-mine exists"]),
    (["--train", "{train}", "--compare", "--init", "scratch"], 2, ["--compare", "not 'scratch'"]),
    (["--task", "imdb"], 2, ["invalid choice: 'imdb'"]),
    (["--train", "{train}", "--per-class", "0"], 2, ["--per-class takes positive numbers"]),
    (["--train", "{train}", "--max-length", "1"], 2, ["--max-length must be at least 4"]),
    (["--valid", "{valid}"], 2, ["--valid and --test need --train"]),
    (["--train", "{train}", "--init", "{huge_hidden}"], 1, ["huge_hidden/config.json: hidden_size is 1000000000"]),
    (["--train", "{train}", "--init", "{huge_layers}"], 1, ["config.json: num_hidden_layers is 1000000000"]),
    (["--train", "{train}", "--init", "{no_heads}"], 1, ["config.json: num_attention_heads is 0"]),
    (["--train", "{train}", "--init", "{too_big}"], 1, ["too_big/config.json", "GiB, more than the"]),
    (["--train", "{train}", "--init", "{list_config}"], 1, ["config.json: not a BERT config (a JSON list"]),
    (["--train", "{train}", "--init", "{bad_tokenizer}"], 1, ["tokenizer_config.json: not valid JSON"]),
    (["--train", "{train}", "--init", "{payload}"], 1, ["pytorch_model.bin: refused, not a checkpoint of this project"]),
    (["predict", "--model", "{payload}", "hi"], 1, ["pytorch_model.bin: refused, not a checkpoint of this project"]),
    (["predict", "--model", "{classifier}", "--file", "{tmp}/binary.txt"], 1, ["binary.txt:2: a binary file"]),
    (["predict", "--model", "{tmp}/runs/nosuch/model", "hi"], 1, ["runs/nosuch/model: no such folder"]),
    (["predict", "--model", "{tmp}/cmp", "hi"], 1, ["cmp holds 2 fine-tuned models; give one with --model",
                                                   "cmp/pretrained/model, ", "cmp/scratch/model"]),
    (["--train", "{train}", "--run-name", "../x"], 2, ["a run name is one folder name"]),
    (["--train", "{train}", "--init", "{bool_pad}"], 1, ["config.json: pad_token_id is True"]),
    (["--train", "{train}", "--init", "{nan_length}"], 1, ["tokenizer_config.json: do_lower_case must be true or false and "
                                                          "model_max_length a positive whole number (got True, nan)"]),
    (["predict", "--model", "{bad_labels}", "hi"], 1, ["bad_labels/labels.json: not a label map"]),
    (["--train", "{train}", "--init", "scratch", "--vocab-size", "100"], 2, ["--vocab-size must be at least 141"]),
]


@pytest.mark.parametrize("argv, code, fragments", BAD_INPUT_CASES, ids=[" ".join(c[0][:4]) for c in BAD_INPUT_CASES])
def test_bad_input_is_one_clear_line_and_writes_nothing(env, capsys, argv, code, fragments):
    """One `error:` line (argparse's own errors add where every flag is listed), the documented exit code
    (2 for usage, as argparse; 1 for bad data or checkpoints), no run folder, and nothing overwritten."""
    tmp_path, files, flags = env
    paths = bad_inputs(tmp_path, files)
    argv = [a.format(**paths) for a in argv]
    if argv[0] != "predict":
        argv += flags[2:] if "--out-dir" in argv else flags  # flags[:2]: --out-dir runs
    capsys.readouterr()
    try:
        got = main(argv)
    except SystemExit as e:  # argparse: usage, then its one error line
        got = e.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert got == code, err
    assert "Traceback" not in err and lines[0].startswith(("error: ", "finetune_cls.py: error: ")), err
    assert len(lines) == 1 or lines[1:] == ["(python finetune_cls.py --help lists every flag)"], err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, err)
    assert [p.name for p in run_dirs(tmp_path)] == ["cls-mine"]  # no run folder for a failed run
    assert (tmp_path / "runs" / "cls-mine" / "keep.txt").read_text() == "precious"
    assert not (tmp_path / "payload-ran").exists() and not (tmp_path / "x").exists()


def test_bad_flag_values_exit_2(env, capsys):
    tmp_path, files, flags = env
    for argv, message in ((["--train", files["train"], "--max-length", "1"], "--max-length must be at least 4"),
                          (["--train", files["train"], "--lr", "-1"], "--lr must be positive"),
                          (["predict", "--model", "m", "--max-length", "1", "hi"], "--max-length must be at least 4")):
        with pytest.raises(SystemExit) as e:
            main(argv + (flags if argv[0] != "predict" else []))
        assert e.value.code == 2 and message in capsys.readouterr().err


def test_predict_missing_file_is_one_line(env, capsys):
    tmp_path, files, flags = env
    assert main(["--train", files["train"], *flags]) == 0
    (run,) = run_dirs(tmp_path)
    capsys.readouterr()
    expect_error(capsys, ["predict", "--model", str(run / "model"), "--file", str(tmp_path / "nofile.txt")],
                 "nofile.txt: no such file")


def test_command_line_exit_code_and_help(capsys):
    missing = subprocess.run([sys.executable, "finetune_cls.py", "--train", "/nonexistent/train.tsv"],
                             cwd=REPO, capture_output=True, text=True)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: /nonexistent/train.tsv: no such file"
    for argv, flags in ((["--help"], ("--task", "--train", "--init", "--epochs", "--lr", "--patience", "--metric",
                                      "--precision", "--device", "--glue-sha256", "--pad-to-max-length", "predict")),
                        (["predict", "--help"], ("--model", "--file", "--json"))):
        with pytest.raises(SystemExit) as e:
            main(argv)
        usage = capsys.readouterr().out
        assert e.value.code == 0 and all(flag in usage for flag in flags)


def test_scratch_baseline_takes_the_size_of_the_newest_pretraining_run(env, capsys):
    """Without --config the baseline differs from the pretrained model only in its weights."""
    tmp_path, files, flags = env
    assert main(["--train", files["train"], "--init", "scratch", *flags]) == 0
    assert f"the size of {tmp_path / 'runs' / 'pre' / 'final'}" in capsys.readouterr().out
    (run,) = run_dirs(tmp_path)
    config = json.loads((run / "model" / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["intermediate_size"]) == (32, 2, 64)


def test_ctrl_c_is_one_line_and_exit_130(env, capsys, monkeypatch):
    tmp_path, files, flags = env

    def interrupted(*a, **kw):
        raise KeyboardInterrupt
    monkeypatch.setattr(finetune_cls, "classification_batches", interrupted)  # Ctrl-C in the first epoch
    assert main([*flags, "--train", files["train"], "--valid", files["valid"]]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "interrupted" and "Traceback" not in err
    assert run_dirs(tmp_path) == []  # nothing was saved: the run's folder goes too


def test_two_runs_in_the_same_second_get_two_folders(env, monkeypatch):
    """The generated name cls-<task>-<time> is claimed by an atomic mkdir: the second run numbers its own."""
    tmp_path, files, flags = env
    monkeypatch.setattr(finetune_cls.time, "strftime", lambda *a: "20261201-120000")
    for _ in range(2):
        assert main([*flags, "--train", files["train"]]) == 0
    assert [p.name for p in run_dirs(tmp_path)] == ["cls-train-20261201-120000", "cls-train-20261201-120000-1"]
    assert all((p / "model" / "labels.json").exists() for p in run_dirs(tmp_path))


def test_a_half_export_of_older_code_is_not_taken_for_the_newest_model(env):
    """train_mlm.py writes final/ whole now; a folder left by older code with only config.json is passed over."""
    tmp_path, _, _ = env
    half = tmp_path / "runs" / "newer" / "final"
    half.mkdir(parents=True)
    (half / "config.json").write_text((tmp_path / "runs" / "pre" / "final" / "config.json").read_text())
    assert pretrained.newest_pretrained(str(tmp_path / "runs")) == str(tmp_path / "runs" / "pre" / "final")


# ----------------------------------------------------------------------------- transfer: side by side, learning curve


def test_per_class_subset_is_stratified_seeded_and_in_order():
    examples = [data.ClassificationExample(f"text {i}", None, label, i + 1, "toy")
                for i, label in enumerate(["a"] * 50 + ["b"] * 30 + ["c"] * 5)]
    random.Random(0).shuffle(examples)
    sub = tasks.per_class_subset(examples, 8, seed=1)
    assert {label: sum(e.label == label for e in sub) for label in "abc"} == {"a": 8, "b": 8, "c": 5}
    assert [e.line for e in sub] == [e.line for e in examples if e in sub]  # the original order
    assert tasks.per_class_subset(examples, 8, seed=1) == sub
    others = [tasks.per_class_subset(examples, 8, seed=s) for s in range(2, 6)]
    assert all(o != sub for o in others) and len({tuple(e.line for e in o) for o in others}) == 4
    assert tasks.per_class_subset(examples, 1000, seed=1) == examples


def test_compare_fine_tunes_both_with_the_same_data_and_writes_the_table(env, capsys):
    tmp_path, files, flags = env
    assert main(["--train", files["train"], "--valid", files["valid"], "--test", files["test"], "--compare",
                 "--run-name", "cls-both", *flags]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "runs" / "cls-both"
    results = json.loads((run / "results.json").read_text())
    p, r = results["pretrained"], results["scratch"]
    assert "random init" in r["init"] and str(tmp_path / "runs" / "pre" / "final") in p["init"]
    for k in ("acc", "f1", "mcc"):
        assert results["difference"][k] == pytest.approx(p[k] - r[k])
        assert json.loads((run / "pretrained" / "results.json").read_text())[k] == p[k]
    table = out[out.index("pretrained vs scratch"):]
    row = [f"{p['acc']:.4f}", f"{r['acc']:.4f}", f"{p['acc'] - r['acc']:+.4f}"]
    assert re.search(r"accuracy\s+" + r"\s+".join(map(re.escape, row)), table), table
    assert re.search(r"MCC\s+-?\d\.\d{4}\s+-?\d\.\d{4}", table) and "macro-F1" in table
    for side in ("pretrained", "scratch"):  # sibling TensorBoard runs: the same tags, so the curves overlay
        ea = EventAccumulator(str(run / side), size_guidance={"scalars": 0})
        ea.Reload()
        assert {"Loss/train", "Loss/valid", "Accuracy/valid"} <= set(ea.Tags()["scalars"])
        assert (run / side / "model" / "labels.json").is_file()


def test_a_learning_curve_over_labels_per_class(env, capsys):
    tmp_path, files, flags = env
    assert main(["--train", files["train"], "--valid", files["valid"], "--test", files["test"], "--compare",
                 "--per-class", "4", "all", "--seeds", "1", "2", "--min-steps", "3", "--run-name", "cls-curve",
                 *flags]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "runs" / "cls-curve"
    results = json.loads((run / "results.json").read_text())
    assert [row["per_class"] for row in results["curve"]] == [4, 32]  # "all": the toy train split's 32
    for row in results["curve"]:
        n = row["per_class"]
        seeds = {s: json.loads((run / f"n{n}-seed{s}" / side / "results.json").read_text())["acc"]
                 for s in (1, 2) for side in ("pretrained",)}
        assert row["pretrained"]["seeds"] == [seeds[1], seeds[2]]
        assert row["pretrained"]["mean"] == pytest.approx(np.mean(row["pretrained"]["seeds"]))
        assert row["difference"]["seeds"] == pytest.approx(
            [a - b for a, b in zip(row["pretrained"]["seeds"], row["scratch"]["seeds"])])
    small = json.loads((run / "n4-seed1" / "scratch" / "results.json").read_text())
    assert small["task"]["train_examples"] == 8 and small["epochs_run"] == 3  # 1 step an epoch: 3 for --min-steps
    for side in ("pretrained", "scratch"):  # test accuracy against N: one chart, a curve per model
        ea = EventAccumulator(str(run / "curve" / side), size_guidance={"scalars": 0})
        ea.Reload()
        points = {e.step: e.value for e in ea.Scalars("Transfer/test_acc")}
        assert points.keys() == {4, 32}
        assert points[4] == pytest.approx(next(r[side]["mean"] for r in results["curve"] if r["per_class"] == 4))
    assert "test accuracy by labels per class" in out


@pytest.mark.parametrize("sig, code, line", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_a_real_run_stopped_by_a_signal_says_so_and_keeps_a_complete_model(env, sig, code, line):
    """Ctrl-C or SIGTERM to a real finetune_cls.py process after its second epoch: one line, the exit code,
    no traceback, and the best model saved so far loads (fine-tuning runs are short: not resumable)."""
    tmp_path, files, flags = env
    cmd = [sys.executable, "finetune_cls.py", "--train", files["train"], "--valid", files["valid"],
           "--run-name", "cls-stopped", *flags, "--epochs", "400"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for out_line in proc.stdout:
        if out_line.startswith("Epoch 2:"):
            proc.send_signal(sig)
            break
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()  # a hang fails the test without leaving the process behind
    assert proc.returncode == code, err
    assert err.strip().splitlines()[-1] == line and "Traceback" not in err, err
    model_dir = tmp_path / "runs" / "cls-stopped" / "model"
    model = BertForSequenceClassification.from_pretrained(str(model_dir))
    assert model.config.num_labels == 2 and (model_dir / "labels.json").is_file()
    assert not (tmp_path / "runs" / "cls-stopped" / "results.json").exists()  # the run did not finish


def test_compare_baseline_takes_the_size_and_vocabulary_of_the_given_init(env, capsys):
    """--init names the pretrained model: the scratch side mirrors it, not the newest run under --out-dir."""
    tmp_path, files, flags = env
    (tmp_path / "elsewhere").mkdir()
    assert main(["--train", files["train"], "--valid", files["valid"], "--compare", "--init",
                 str(tmp_path / "runs" / "pre" / "final"), "--run-name", "cls-mirror", *flags[2:],
                 "--out-dir", str(tmp_path / "elsewhere")]) == 0
    run = tmp_path / "elsewhere" / "cls-mirror"
    pre = json.loads((tmp_path / "runs" / "pre" / "final" / "config.json").read_text())
    scratch = json.loads((run / "scratch" / "model" / "config.json").read_text())
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size"):
        assert scratch[key] == pre[key], key
    assert (run / "scratch" / "model" / "vocab.txt").read_text() == (tmp_path / "vocab.txt").read_text()
    assert json.loads((run / "results.json").read_text())["scratch"]["init"].startswith("random init (the size of")


def test_valid_agrees_with_test_compares_the_metric_that_picked_the_epochs(tmp_path, capsys):
    side = lambda acc, f1, mcc, valid: {"acc": acc, "f1": f1, "mcc": mcc, "best_valid": valid, "metric": "mcc",
                                        "split": "test", "best_epoch": 1}
    # pretrained better on valid MCC and on test MCC, though worse on test accuracy: they agree
    agree = finetune_cls.compare({"pretrained": side(0.70, 0.6, 0.60, 0.50), "scratch": side(0.72, 0.6, 0.50, 0.40)},
                                 str(tmp_path))
    assert agree["valid_agrees_with_test"] is True and agree["difference"]["acc"] == pytest.approx(-0.02)
    disagree = finetune_cls.compare({"pretrained": side(0.75, 0.6, 0.45, 0.50), "scratch": side(0.70, 0.6, 0.50, 0.40)},
                                    str(tmp_path))
    assert disagree["valid_agrees_with_test"] is False


def test_a_sweep_skips_repeated_splits_and_names_the_split_it_reports_on(env, capsys):
    """Without a test split the curve is on valid, and says so; N at least a class's size is 'all', run once.
    A subsampled split trains for at least 150 steps by default; the whole one for --epochs."""
    tmp_path, files, flags = env
    assert main(["--train", files["train"], "--valid", files["valid"], "--init", "scratch", "--per-class", "4",
                 "1000", "all", "--seeds", "1", "--run-name", "cls-dup", *flags]) == 0
    out = capsys.readouterr().out
    assert out.count("the same train split as an earlier value") == 1  # all = 1000 here: 32 per class
    assert "--per-class all: the same train split" in out
    run = tmp_path / "runs" / "cls-dup"
    results = json.loads((run / "results.json").read_text())
    assert results["split"] == "valid" and [row["per_class"] for row in results["curve"]] == [4, 32]
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("n")) == ["n32-seed1", "n4-seed1"]
    assert json.loads((run / "n4-seed1" / "results.json").read_text())["epochs_run"] == 150  # 1 step an epoch
    assert json.loads((run / "n32-seed1" / "results.json").read_text())["epochs_run"] == 1
    ea = EventAccumulator(str(run / "curve" / "model"), size_guidance={"scalars": 0})
    ea.Reload()
    assert {"Transfer/valid_acc", "Transfer/valid_f1", "Transfer/valid_mcc"} <= set(ea.Tags()["scalars"])
    assert "valid accuracy by labels per class" in out


def test_an_interrupted_save_leaves_the_previous_model_whole(tmp_path, monkeypatch):
    n = write_vocab(tmp_path / "vocab.txt")
    tokenizer = data.BertTokenizer(str(tmp_path / "vocab.txt"))
    labels = data.LabelMap(["neg", "pos"])
    model = BertForSequenceClassification(tiny_config(n))
    path = str(tmp_path / "model")
    finetune_cls.save_model(model, tokenizer, labels, path)
    before = sorted(os.listdir(path))

    def interrupted(self, path):
        raise KeyboardInterrupt
    monkeypatch.setattr(data.LabelMap, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        finetune_cls.save_model(model, tokenizer, labels, path)
    assert sorted(os.listdir(path)) == before and "labels.json" in before
    assert sorted(os.listdir(tmp_path)) == ["model", "vocab.txt"]  # no temporary folder left
