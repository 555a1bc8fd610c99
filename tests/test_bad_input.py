"""Bad input, one table per script: each case gives one `error:` line (no traceback; a usage error adds
where every flag is listed), the documented exit
code (2 for usage, as argparse; 1 for bad data), and leaves no run folder and no corpus cache behind
(a vocabulary trained before the error is complete and kept, as any cache entry that later runs trust)."""

import gzip
import os
import subprocess
import sys

import pytest
import torch

import prepare_data
import train_mlm
from tokenization import train_wordpiece_vocab

class Payload:
    """Unpickled, it would call exec: a checkpoint that is a program."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


GOOD = "".join(f"Sentence number {i} is here.\nAnother one follows it.\n\n" for i in range(30))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")

    def put(name, content):
        path = d / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return str(path)
    def save(name, obj):
        torch.save(obj, d / name)
        return str(d / name)
    vocab = str(d / "vocab.txt")
    train_wordpiece_vocab([GOOD], 200, vocab)
    (d / "nocorpus").mkdir()
    put("nocorpus/readme.md", "Not a corpus.\n")
    return {
        "good": put("good.txt", GOOD), "vocab": vocab, "nocorpus": str(d / "nocorpus"), "missing": str(d / "missing.txt"),
        "empty": put("empty.txt", ""), "blank": put("blank.txt", "\n \n\n"),
        "latin1": put("latin1.txt", GOOD.encode() + "Caf\xe9 au lait.\n".encode("latin-1")),
        "gbk": put("gbk.txt", "第一句话。\n第二句话。\n".encode("gb18030")),
        "badjson": put("bad.jsonl", '{"text": "Fine."}\n{"text": oops}\n'),
        "nofield": put("nofield.jsonl", '{"body": "Fine."}\n'),
        "onedoc": put("onedoc.txt", "Just one paragraph. It has two sentences.\n"),
        "nopunct": put("nopunct.txt", ("word " * 300 + "\n\n") * 3),
        "badgz": put("bad.txt.gz", gzip.compress(GOOD.encode())[:-20]),
        "nospecial": put("nospecial.txt", "a\nb\nc\n"),
        "truncated": put("runs/old/checkpoints/step_0000002.pt", b"\x80\x02not a checkpoint"),
        "dupvocab": put("dup.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nword\nword\n"),
        "otherdict": save("other.pt", {"weights": torch.zeros(2), "note": "not a train_mlm.py checkpoint"}),
        "payload": save("payload.pt", Payload(str(d / "payload-ran"))),
        "pattern": str(d / "*.none"),
        "file_as_dir": put("plain.txt", "A file, not a folder.\n"),
    }


TRAIN_CASES = [  # (flags, exit code, what the line must name)
    (["--steps", "0"], 2, "--steps"), (["--batch-size", "-1"], 2, "--batch-size"), (["--lr", "0"], 2, "--lr"),
    (["--decay", "1.5"], 2, "--decay"), (["--short-len", "0"], 2, "--short-len"),
    (["--short-context", "-1"], 2, "--short-context"), (["--mask-prob-end", "1"], 2, "--mask-prob-end"), (["--mask-prob", "0"], 2, "--mask-prob"), (["--dropout", "1"], 2, "--dropout"),
    (["--workers", "0"], 2, "--workers"), (["--shuffle-buffer", "0"], 2, "--shuffle-buffer"),
    (["--vocab-sample", "0"], 2, "--vocab-sample"), (["--device", "tpu9"], 2, "--device tpu9"),
    (["--precision", "fp16", "--device", "cpu"], 2, "fp16"), (["--hidden", "30", "--heads", "4"], 2, "--hidden"),
    (["--data", "{missing}"], 1, "missing.txt: no such file"), (["--data", "{empty}"], 1, "empty.txt: file is empty"),
    (["--data", "{blank}"], 1, "blank.txt: file is empty"), (["--data", "{nocorpus}"], 1, "nocorpus: folder has no"),
    (["--data", "{pattern}"], 1, "no file matches"), (["--data", "{latin1}"], 1, "latin1.txt:91: not valid UTF-8"),
    (["--data", "{gbk}"], 1, "iconv -f gb18030"), (["--data", "{badjson}"], 1, "bad.jsonl:2: bad JSON"),
    (["--data", "{nofield}"], 1, "nofield.jsonl:1: no 'text' field"), (["--data", "{onedoc}"], 1, "too few documents"),
    (["--data", "{nopunct}"], 1, "no sentence punctuation"), (["--data", "{badgz}"], 1, "not a readable gzip file"),
    (["--minutes", "0"], 2, "--minutes must be positive"), (["--minutes", "5", "--steps", "10"], 2, "not both"),
    (["--minutes", "5", "--resume", "{missing}"], 2, "a resumed run keeps the steps its budget chose"),
    (["--vocab", "{missing}"], 1, "missing.txt: no such file"),
    (["--vocab", "{nospecial}"], 1, "lacks the special token"),
    (["--resume", "{nocorpus}"], 2, "no checkpoint file"),
    (["--resume", "{truncated}"], 1, "step_0000002.pt: cannot read checkpoint"),
    (["--resume", "{otherdict}"], 1, "other.pt: not a train_mlm.py checkpoint (it has no model"),
    (["--resume", "{payload}"], 1, "payload.pt: refused, not a checkpoint of this project"),
    (["--vocab", "{dupvocab}"], 1, "dup.txt:7: the token 'word' again (first on line 6)"),
    (["--hidden", "1000000000"], 2, "--hidden: hidden_size is 1000000000"),
    (["--layers", "1000000000"], 2, "--layers: num_hidden_layers is 1000000000"),
    (["--heads", "0"], 2, "--heads: num_attention_heads is 0"),
    (["--layers", "1000", "--hidden", "65536", "--heads", "1"], 2, "GiB, more than the"),
    (["--batch-size", "1000000000"], 2, "--batch-size 1000000000 x --seq-len 64: a step of this model needs"),
    (["--run-name", "../x"], 2, "a run name is one folder name"),
    (["--vocab-size", "100"], 2, "--vocab-size must be at least 141"),
    (["--clip", "-1"], 2, "--clip must be positive"), (["--lr", "nan"], 2, "--lr must be a finite number"),
    (["--seed", "-1"], 2, "--seed must be in [0, 2^32)"), (["--seq-len", "4"], 2, "--seq-len must be in [8, 65,536]"),
    (["--max-predictions", "100000000"], 2, "--max-predictions at most --seq-len"),
    (["--seq-len", "2000000"], 2, "--seq-len must be in [8, 65,536]"),
    (["--run-name", "r" * 300], 2, "a run name of 300 bytes is too long"),
    (["--out-dir", "{good}"], 2, "good.txt: not a folder"),
    (["--cache-dir", "{file_as_dir}/cache"], 1, "while writing the vocabulary"),
]


def leftovers(root):
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, dirs, names in os.walk(root) for n in dirs + names
                  if n.startswith(("corpus-", ".tmp")) or os.path.basename(d) == "runs2")


def check(capsys, code, expected_code, fragment, tmp_path):
    err = capsys.readouterr().err
    # ours: 'error: ...'; argparse's: its usage, then 'prog: error: ...'
    lines = [line for line in err.splitlines() if line.startswith("error: ") or ": error: " in line]
    assert code == expected_code, err
    assert len(lines) == 1 and fragment in lines[0], err
    assert "Traceback" not in err
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("flags,expected_code,fragment", TRAIN_CASES, ids=[" ".join(c[0]) for c in TRAIN_CASES])
def test_train_mlm_bad_input(files, tmp_path, capsys, flags, expected_code, fragment):
    flags = [f.format(**files) for f in flags]
    argv = ["--data", files["good"], "--vocab-size", "200", "--cache-dir", str(tmp_path / "cache"),
            "--out-dir", str(tmp_path / "runs2"), "--run-name", "bad", "--no-progress", *flags]
    try:
        code = train_mlm.main(argv)
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    check(capsys, code, expected_code, fragment, tmp_path)
    assert not (tmp_path / "runs2" / "bad").exists() and not (tmp_path / "x").exists()
    assert not os.path.exists(os.path.join(os.path.dirname(files["good"]), "payload-ran"))


PREPARE_CASES = [
    (["--workers", "0"], 2, "--workers"), (["--vocab-size", "0"], 2, "--vocab-size"),
    (["--vocab-size", "150", "--cased"], 2, "--vocab-size must be at least 193"),
    (["--data", "{missing}"], 1, "missing.txt: no such file"), (["--data", "{latin1}"], 1, "latin1.txt:91"),
    (["--data", "{badjson}"], 1, "bad.jsonl:2: bad JSON"), (["--data", "{nopunct}"], 1, "no sentence punctuation"),
    (["--data", "{good}", "--vocab", "{nospecial}"], 1, "lacks the special token"),
    (["--data", "{good}", "--vocab", "{dupvocab}"], 1, "dup.txt:7: the token 'word' again"),
]


@pytest.mark.parametrize("flags,expected_code,fragment", PREPARE_CASES, ids=[" ".join(c[0]) for c in PREPARE_CASES])
def test_prepare_data_bad_input(files, tmp_path, capsys, flags, expected_code, fragment):
    flags = [f.format(**files) for f in flags]
    argv = ["--data", files["good"], "--vocab-size", "200", "--cache-dir", str(tmp_path / "cache"), "--workers", "1",
            *flags]
    try:
        code = prepare_data.main(argv)
    except SystemExit as e:
        code = e.code
    check(capsys, code, expected_code, fragment, tmp_path)


@pytest.mark.parametrize("script, flag, meant", [("train_mlm.py", "--setps", "--steps"),
                                                 ("prepare_data.py", "--wokers", "--workers"),
                                                 ("finetune_cls.py", "--eopchs", "--epochs")])
def test_a_misspelled_flag_is_answered_with_the_closest_one_first(script, flag, meant):
    """What a user sees (a real process): the one line that matters, then where every flag is listed."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, script, flag, "3"], cwd=root, capture_output=True, text=True, timeout=120)
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and lines[0] == f"{script}: error: unknown flag {flag}, did you mean {meant}?"
    assert lines[1:] == [f"(python {script} --help lists every flag)"]  # not a screenful that scrolls it away
