"""What a newcomer reads (issue 22): each message checked in the output of a captured run, as a user
sees it, not in a unit of its formatter. (The misspelled flag, the ETA, the evaluation lines, predict's
errors and the start-up lines are tested beside their scripts' other tests.)"""

import json
import re

import pytest

import finetune_cls
import train_mlm
from training import Trainer
from cli import display_width
from model import BertConfig, BertForPreTraining

CHINESE = "今天天气很好我们去公园散步看见许多人在湖边钓鱼孩子们放风筝老人下棋"


def write_tsv(path, rows):
    path.write_text("sentence\tlabel\n" + "".join(f"{a}\t{b}\n" for a, b in rows), encoding="utf-8")
    return str(path)


def english_rows(n):
    words = ["good", "bad", "movie", "plot", "acting", "story", "great", "awful"]
    return [(" ".join(words[(i + j) % len(words)] for j in range(5)), "pos" if i % 2 else "neg") for i in range(n)]


def pretrained_run(folder, tokens):
    """A train_mlm.py-like export (runs/<name>/final) whose vocabulary is `tokens`."""
    final = folder / "final"
    final.mkdir(parents=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("".join(t + "\n" for t in dict.fromkeys(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *tokens])),
                     encoding="utf-8")
    n = len(vocab.read_text(encoding="utf-8").splitlines())
    config = BertConfig(vocab_size=n, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    BertForPreTraining(config).save_pretrained(str(final), vocab_file=str(vocab))
    (final / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 64}))
    return final


def test_a_pretrained_model_that_misreads_the_task_is_named_with_how_to_choose_another(tmp_path, capsys):
    """The newest pretraining run was Chinese (a vocabulary of characters, and the letters a-z); the task is
    English: every word is spelled out letter by letter."""
    letters = [c for c in "abcdefghijklmnopqrstuvwxyz"] + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"]
    final = pretrained_run(tmp_path / "runs" / "zh", [*CHINESE, *letters])
    train = write_tsv(tmp_path / "train.tsv", english_rows(64))
    assert finetune_cls.main(["--train", train, "--out-dir", str(tmp_path / "runs"), "--epochs", "1",
                              "--no-progress", "--cache-dir", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("warning: the vocabulary"))
    assert f"the vocabulary of {final} reads this task badly" in line
    assert float(re.search(r"a word takes (\d+\.\d) pieces", line)[1]) > 4  # letter by letter
    assert "it was picked as the newest train_mlm.py run; choose another with --init PATH" in line


def test_an_english_model_on_its_own_language_gets_no_warning(tmp_path, capsys):
    words = ["good", "bad", "movie", "plot", "acting", "story", "great", "awful"]
    pretrained_run(tmp_path / "runs" / "en", [*"abcdefghijklmnopqrstuvwxyz", *words])
    train = write_tsv(tmp_path / "train.tsv", english_rows(400))
    assert finetune_cls.main(["--train", train, "--out-dir", str(tmp_path / "runs"), "--epochs", "6",
                              "--no-progress"]) == 0
    assert "warning" not in capsys.readouterr().out


def test_a_run_too_small_to_learn_says_so_and_a_result_at_chance_is_named(tmp_path, capsys):
    """16 rows, one batch an epoch, and texts that do not tell the classes apart: the model answers one
    class for all, which is what always answering the commonest class scores."""
    rows = [("the same words every time", "pos" if i % 2 else "neg") for i in range(16)]
    train = write_tsv(tmp_path / "train.tsv", rows)
    test = write_tsv(tmp_path / "test.tsv", rows[:8])
    assert finetune_cls.main(["--train", train, "--valid", test, "--test", test, "--init", "scratch",
                              "--out-dir", str(tmp_path / "runs"), "--no-progress", "--vocab-size", "200",
                              "--cache-dir", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    assert "examples in the smallest class" not in out  # 8 per class is enough: only what fails is named
    assert "warning: too little to learn much: 3 optimizer steps (give more --epochs or --min-steps; at least 50)" in out
    assert re.search(r"warning: accuracy 0\.5000 is chance: always answering '(pos|neg)', the commonest class of "
                     r"this split, scores 0\.5000", out)


def test_chinese_labels_keep_the_report_columns_aligned(tmp_path, capsys):
    rows = [(f"{'好' * (i % 3 + 1)}电影", "正面") for i in range(20)] + [(f"{'差' * (i % 3 + 1)}电影", "负面")
                                                                      for i in range(20)] + \
        [(f"{'一般' * (i % 2 + 1)}", "neutral") for i in range(20)]
    train = write_tsv(tmp_path / "train.tsv", rows)
    assert finetune_cls.main(["--train", train, "--valid", train, "--init", "scratch", "--epochs", "1",
                              "--out-dir", str(tmp_path / "runs"), "--no-progress", "--vocab-size", "200",
                              "--cache-dir", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out.splitlines()
    header = out.index(next(l for l in out if l.strip().startswith("class") and "precision" in l))
    table = out[header:header + 4]
    # The first figure of every row starts in the same terminal column, whatever the label's script.
    starts = {display_width(line[:re.search(r"\d", line).start()]) for line in table[1:]}
    assert len(starts) == 1 and display_width(table[0][:table[0].index("precision")]) + 9 >= starts.pop()


def test_a_tiny_corpus_says_what_its_split_and_vocabulary_became(tmp_path, capsys):
    """Three documents: a 5% validation share is one document of three; an 8,192-token vocabulary asked of
    a few hundred words comes out smaller. Both said, as the run goes."""
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("".join(f"Document {d} has a first sentence here.\nIts second sentence follows it.\n"
                              f"A third one ends document {d}.\n\n" for d in range(3)))
    code = train_mlm.main(["--data", str(corpus), "--steps", "2", "--batch-size", "2", "--eval-batches", "1",
                           "--viz-interval", "0", "--no-progress", "--cache-dir", str(tmp_path / "cache"),
                           "--out-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 0
    assert "note: 1 of the corpus's 3 documents (33%) are held out for validation, not 5% (--valid-fraction)" in err
    assert re.search(r"note: \d+ tokens, not 8,192: the text has no more pieces that occur twice or more", err)


def test_resuming_a_folder_that_does_not_exist_names_the_runs_that_do(run, tmp_path, capsys):
    assert run("--steps", "2", "--save-interval", "2", "--eval-interval", "100", "--viz-interval", "0")[0] == 0
    capsys.readouterr()
    assert train_mlm.main(["--resume", str(tmp_path / "runs" / "rnu")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: --resume {tmp_path / 'runs' / 'rnu'}: no such file or folder; runs with checkpoints in " \
                  f"{tmp_path / 'runs'}: run"


@pytest.mark.parametrize("script", ["train_mlm", "prepare_data", "finetune_cls"])
def test_help_states_each_default_once(script, capsys):
    module = __import__(script)
    with pytest.raises(SystemExit):
        module.main(["--help"])
    help_text = capsys.readouterr().out
    flags = re.split(r"\n  (?=-)", help_text)[1:]  # one block per flag
    assert len(flags) > 8
    assert not [f for f in flags if f.count("default") > 1 and f.count("(default") > 1], help_text
    assert "(default: one per CPU, at most one per MB of corpus)" in " ".join(help_text.split()) or script == "finetune_cls"


def test_a_fine_tuning_run_logged_to_a_file_prints_plain_progress_lines_within_each_epoch(tmp_path, capsys,
                                                                                         monkeypatch):
    """Output to a file (not a terminal): no bar, and no silence either for the length of an epoch."""
    monkeypatch.setattr(Trainer, "LINE_EVERY", 0.0)  # a line at every step, as a long epoch gets every 30 s
    rows = [(f"row {i} is {'good' if i % 2 else 'bad'}", "pos" if i % 2 else "neg") for i in range(96)]
    train = write_tsv(tmp_path / "train.tsv", rows)
    assert finetune_cls.main(["--train", train, "--init", "scratch", "--epochs", "1", "--batch-size", "16",
                              "--out-dir", str(tmp_path / "runs"), "--vocab-size", "200",
                              "--cache-dir", str(tmp_path / "cache")]) == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("epoch 1, step ")]
    assert lines and all(re.fullmatch(r"epoch 1, step \d+/(\d+): train loss \d+\.\d{4}, lr [\d.e+-]+, "
                                      r"[\d.]+ steps/s, epoch ETA \d+:\d\d", l) for l in lines), lines
    assert "\r" not in "".join(lines)
