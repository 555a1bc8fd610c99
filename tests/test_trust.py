"""A checkpoint or a run folder never runs foreign code or loses a run (issue 18), each case caused for
real: a pickle payload in a checkpoint, two runs with one name, a resumed copy, a crafted checkpoint, an
older step resumed, an export interrupted, a finished run resumed, a symbolic link that loops, many small
files, one enormous line, SIGTERM during preparation."""

import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

import checkpoints
import corpus as corpus_module
import token_cache
import train_mlm
from helpers import scalars, signal_at_batch, signal_when, small_run_argv
from model import BertForPreTraining, BertModel, CheckpointError
from tokenization import BertTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ("--eval-interval", "100", "--viz-interval", "0")


class Payload:
    """What a hostile pickle carries: unpickling it calls exec, which would write `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def snapshot(folder) -> dict:
    """Every file under folder, with its content's digest."""
    found = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return found


def one_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def step_files(run_dir) -> list[str]:
    return sorted(os.path.basename(p) for _, p in checkpoints.step_checkpoints(os.path.join(run_dir, "checkpoints")))


# ----------------------------------------------------------------------------- loading never executes


@pytest.mark.parametrize("kind", ["in a real checkpoint", "alone"])
def test_a_checkpoint_with_a_pickle_payload_is_refused_before_any_of_it_runs(run, tmp_path, capsys, kind):
    code, run_dir = run("--steps", "2", "--save-interval", "2", *FAST)
    assert code == 0
    path = run_dir / "checkpoints" / "step_0000002.pt"
    marker = tmp_path / "payload-ran"
    if kind == "alone":
        torch.save(Payload(marker), path)
    else:
        state = torch.load(path, weights_only=True)
        torch.save({**state, "extra": Payload(marker)}, path)
    capsys.readouterr()
    assert train_mlm.main(["--resume", str(run_dir), "--steps", "4", "--no-progress"]) == 1
    line = one_error(capsys)
    assert line.startswith(f"error: {path}: refused, not a checkpoint of this project") and "nothing in it was run" in line
    assert "weights_only" not in line  # no advice to turn the safety off
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the payload is live: loading as the old code did runs it
    assert marker.exists()


def test_weights_files_of_a_model_folder_never_run_code(tmp_path):
    """--init and predict read a Hugging Face folder through from_pretrained: its pytorch_model.bin too."""
    config = {"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
              "intermediate_size": 16}
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    marker = tmp_path / "payload-ran"
    weights = {k: v for k, v in BertModel(train_mlm.BertConfig(**config)).state_dict().items()}
    torch.save({**weights, "x": Payload(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="refused, not a checkpoint of this project"):
        BertModel.from_pretrained(str(folder))
    assert not marker.exists()
    torch.save(weights, folder / "pytorch_model.bin")  # the same folder without the payload loads
    assert BertModel.from_pretrained(str(folder)).config.hidden_size == 8


def test_old_checkpoints_need_the_numpy_allowlist_and_new_ones_nothing(run):
    """tests/fixtures/run_v1 (numpy's RNG state as an array) loads only with the three numpy names allowed;
    a checkpoint written now holds tensors and plain values alone."""
    old = os.path.join(ROOT, "tests", "fixtures", "run_v1", "step_0000004.pt")
    with pytest.raises(Exception, match="numpy"):
        torch.load(old, weights_only=True)
    assert checkpoints.load_checkpoint(old)["step"] == 4
    code, run_dir = run("--steps", "2", "--save-interval", "2", *FAST)
    assert code == 0
    state = torch.load(run_dir / "checkpoints" / "step_0000002.pt", weights_only=True)  # no allowlist
    assert state["step"] == 2 and isinstance(state["rng"]["numpy"]["key"], torch.Tensor)


@pytest.mark.parametrize("content, fragment", [
    ({"model": {}}, "not a train_mlm.py checkpoint (it has no optimizer, scaler"),
    ({"args": {"out_dir": "/elsewhere", "run_name": "victim"}}, "not a train_mlm.py checkpoint (it has no model"),
    ([1, 2, 3], "not a train_mlm.py checkpoint (it holds a list"),
])
def test_a_foreign_pt_file_is_named_not_loaded(tmp_path, capsys, content, fragment):
    path = tmp_path / "other.pt"
    torch.save(content, path)
    assert train_mlm.main(["--resume", str(path), "--out-dir", str(tmp_path / "runs"), "--no-progress"]) == 1
    assert fragment in one_error(capsys)
    assert not (tmp_path / "runs").exists()


def test_checkpoint_settings_are_checked_like_flags(run, capsys):
    code, run_dir = run("--steps", "2", "--save-interval", "2", *FAST)
    path = run_dir / "checkpoints" / "step_0000002.pt"
    state = torch.load(path, weights_only=True)
    state["args"]["batch_size"] = "many"
    torch.save(state, path)
    before = snapshot(run_dir)
    assert train_mlm.main(["--resume", str(run_dir), "--steps", "4", "--no-progress"]) == 1
    assert "its settings are not valid (--batch-size must be a whole number, got 'many')" in one_error(capsys)
    assert snapshot(run_dir) == before


# ----------------------------------------------------------------------------- a run folder belongs to one run


def test_a_second_run_with_the_same_name_is_refused_and_touches_nothing(run, capsys):
    code, run_dir = run("--steps", "2", "--save-interval", "1", *FAST)
    assert code == 0
    before = snapshot(run_dir)
    capsys.readouterr()
    assert run("--steps", "2", "--seed", "7", *FAST)[0] == 2
    assert "exists (another run's folder; nothing in it was touched)" in one_error(capsys)
    assert snapshot(run_dir) == before


def test_two_runs_started_at_once_with_one_name_cannot_share_it(corpus, tmp_path):
    argv = small_run_argv(corpus, tmp_path, "same", "--steps", "3", "--save-interval", "1")
    procs = [subprocess.Popen([sys.executable, "train_mlm.py", *argv, "--seed", str(seed)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert sorted(code for code, _ in results) == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "exists" in loser or "in use" in loser, loser
    winner_seed = 1 if results[0][0] == 0 else 2
    for _, path in checkpoints.step_checkpoints(str(tmp_path / "same" / "checkpoints")):
        assert checkpoints.load_checkpoint(path)["args"]["seed"] == winner_seed


@pytest.mark.parametrize("name", ["../escaped", "a/b", "..", ".tmp-x"])
def test_a_run_name_is_one_folder_name(tmp_path, capsys, name):
    with pytest.raises(SystemExit) as e:
        train_mlm.main(["--run-name", name, "--out-dir", str(tmp_path / "runs")])
    assert e.value.code == 2 and "a run name is one folder name" in capsys.readouterr().err
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "runs").exists()


def test_a_resumed_copy_writes_into_the_copy_only(run, tmp_path):
    code, original = run("--steps", "4", "--save-interval", "2", *FAST, name="a")
    assert code == 0
    before = snapshot(original)
    copy = tmp_path / "runs" / "a-branch"
    shutil.copytree(original, copy)
    assert train_mlm.main(["--resume", str(copy), "--steps", "6", "--no-progress"]) == 0
    assert snapshot(original) == before
    assert step_files(copy) == ["step_0000004.pt", "step_0000006.pt"]
    assert json.loads((copy / "final" / "config.json").read_text())["vocab_size"] > 5
    assert sorted(scalars(copy, "Loss/train")) == list(range(1, 7))


def test_a_crafted_checkpoint_cannot_point_writes_elsewhere(run, tmp_path):
    """A checkpoint whose settings name another run's folder, cache and vocabulary: resumed, it writes
    only into the folder it was found in."""
    code, victim = run("--steps", "4", "--save-interval", "2", *FAST, name="victim")
    code, source = run("--steps", "2", "--save-interval", "2", *FAST, name="source")
    before = snapshot(victim)
    state = torch.load(source / "checkpoints" / "step_0000002.pt", weights_only=True)
    state["args"].update(out_dir=str(victim.parent), run_name="victim", cache_dir=str(victim),
                         vocab=str(victim / "vocab.txt"), keep_last=1)
    evil = tmp_path / "downloads" / "evil"
    (evil / "checkpoints").mkdir(parents=True)
    torch.save(state, evil / "checkpoints" / "step_0000002.pt")
    resume = train_mlm.Resume(str(evil))
    values = resume.settings(vars(train_mlm.parse_args(["--resume", str(evil)])), {"resume"})
    assert resume.cache_dir(values) is None  # no corpus cache there: its cache_dir is not followed
    evil_before = snapshot(evil)
    assert train_mlm.main(["--resume", str(evil), "--steps", "4", "--no-progress", "--out-dir", str(tmp_path / "out"),
                           "--cache-dir", str(tmp_path / "cache")]) == 0
    assert snapshot(victim) == before
    # evil/ holds a checkpoints/ folder but is no run's folder: the resumed run starts a new one under --out-dir
    assert snapshot(evil) == evil_before
    (new,) = (tmp_path / "out").iterdir()
    assert (new / "final" / "config.json").exists() and (new / "vocab.txt").read_text() == state["vocab"]


def test_a_loose_checkpoint_file_resumes_into_a_new_run_folder(run, tmp_path, capsys):
    """A checkpoint file outside any run's checkpoints/ (downloaded, copied) belongs to no folder: resuming it
    starts a new one under --out-dir, as a branch."""
    code, run_dir = run("--steps", "2", "--save-interval", "2", *FAST)
    loose = tmp_path / "loose.pt"
    shutil.copy(run_dir / "checkpoints" / "step_0000002.pt", loose)
    capsys.readouterr()
    assert train_mlm.main(["--resume", str(loose), "--steps", "3", "--out-dir", str(tmp_path / "new"),
                           "--no-progress"]) == 0
    (folder,) = (tmp_path / "new").iterdir()
    assert f"(branched from {loose} at step 2)" in capsys.readouterr().out
    assert step_files(folder) == ["step_0000003.pt"] and (folder / "final").is_dir()


# ----------------------------------------------------------------------------- checkpoints follow the line of training


def test_an_older_step_is_not_resumed_in_place_but_can_be_branched(run, tmp_path, capsys):
    code, run_dir = run("--steps", "6", "--save-interval", "2", "--keep-last", "3", *FAST, name="a")
    assert code == 0 and step_files(run_dir) == ["step_0000002.pt", "step_0000004.pt", "step_0000006.pt"]
    before = snapshot(run_dir)
    step2 = run_dir / "checkpoints" / "step_0000002.pt"
    capsys.readouterr()
    assert train_mlm.main(["--resume", str(step2), "--no-progress"]) == 2
    line = one_error(capsys)
    assert "has later checkpoints (step_0000006.pt): to continue the run from its newest, --resume " \
        f"{run_dir}" in line and f"--resume {step2} --run-name NEW_NAME" in line
    assert train_mlm.main(["--resume", str(run_dir / "checkpoints" / "best.pt"), "--steps", "8", "--no-progress"]) == 2
    assert "branch into a new run folder" in one_error(capsys)
    assert snapshot(run_dir) == before
    # The branch: a new folder, continuing exactly the line it branched from.
    assert train_mlm.main(["--resume", str(step2), "--run-name", "b", "--out-dir", str(tmp_path / "runs"),
                           "--steps", "4", "--no-progress"]) == 0
    assert f"(branched from {step2} at step 2)" in capsys.readouterr().out
    branch = tmp_path / "runs" / "b"
    assert snapshot(run_dir) == before and step_files(branch) == ["step_0000004.pt"]
    a, b = scalars(run_dir, "Loss/train"), scalars(branch, "Loss/train")
    assert sorted(b) == [3, 4] and all(a[s] == b[s] for s in (3, 4))


def test_the_checkpoint_resumed_from_is_kept_and_resume_with_names_the_last_one(run, monkeypatch, capsys):
    code, run_dir = run("--steps", "4", "--save-interval", "1", "--keep-last", "1", *FAST)
    assert code == 0 and step_files(run_dir) == ["step_0000004.pt"]
    signal_at_batch(monkeypatch, 3, signal.SIGTERM)  # at the 3rd step after the resume: step 7
    capsys.readouterr()
    assert train_mlm.main(["--resume", str(run_dir), "--steps", "9", "--no-progress"]) == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    newest = run_dir / "checkpoints" / "step_0000007.pt"
    assert f"checkpoint saved to {newest}" in err and f"resume with: python train_mlm.py --resume {run_dir}" in err
    assert step_files(run_dir) == ["step_0000004.pt", "step_0000007.pt"]  # the last 1, and where it started
    monkeypatch.undo()
    assert train_mlm.main(["--resume", str(newest), "--no-progress"]) == 0
    assert step_files(run_dir) == ["step_0000007.pt", "step_0000009.pt"]
    assert sorted(scalars(run_dir, "Loss/train")) == list(range(1, 10))


def test_writers_opened_in_the_same_second_keep_each_others_events(tmp_path):
    """tensorboardX names an event file by the second: a run resumed at once into the same folder would
    overwrite the events of the run before it (with tensorboardX's own names, this test fails)."""
    from visuals import summary_writer
    for step in (1, 2, 3):
        writer = summary_writer(str(tmp_path), purge_step=step)
        writer.add_scalar("Loss/train", float(step), step)
        writer.close()
    assert len(glob.glob(str(tmp_path / "events.out.tfevents.*"))) == 3
    assert scalars(tmp_path, "Loss/train") == {1: 1.0, 2: 2.0, 3: 3.0}


# ----------------------------------------------------------------------------- exports whole or absent; finished runs


def test_an_interrupted_export_leaves_no_final_and_a_resume_exports_it(run, monkeypatch, capsys):
    save = BertForPreTraining.save_pretrained

    def save_then_stop(self, path, vocab_file=None):
        save(self, path, vocab_file)
        raise KeyboardInterrupt  # after every file of the model: tokenizer_config.json is still to come
    monkeypatch.setattr(BertForPreTraining, "save_pretrained", save_then_stop)
    code, run_dir = run("--steps", "2", "--save-interval", "2", *FAST)
    assert code == 130
    assert not (run_dir / "final").exists() and not glob.glob(str(run_dir / ".tmp-*"))
    monkeypatch.undo()
    capsys.readouterr()
    assert train_mlm.main(["--resume", str(run_dir), "--no-progress"]) == 0  # at its last step: evaluates, exports
    assert "valid MLM loss" in capsys.readouterr().out
    assert sorted(os.listdir(run_dir / "final")) == ["config.json", "model.safetensors", "tokenizer_config.json",
                                                     "vocab.txt"]


def test_a_finished_run_resumed_says_so_and_changes_nothing(run, capsys):
    code, run_dir = run("--steps", "2", "--save-interval", "2", *FAST)
    before = snapshot(run_dir)
    capsys.readouterr()
    assert train_mlm.main(["--resume", str(run_dir), "--no-progress"]) == 0
    assert "the run is finished at step 2 of 2" in capsys.readouterr().out
    assert train_mlm.main(["--resume", str(run_dir), "--steps", "1", "--no-progress"]) == 2
    assert "--steps 1 is below step 2" in one_error(capsys)
    assert snapshot(run_dir) == before


def test_a_half_written_checkpoint_of_a_killed_process_is_removed_at_the_next_start(run, capsys):
    code, run_dir = run("--steps", "2", "--save-interval", "2", *FAST)
    fd, stale = tempfile.mkstemp(dir=run_dir / "checkpoints", prefix=".tmp-")  # as atomic_write names it
    os.write(fd, b"half a checkpoint")
    os.close(fd)
    stale = Path(stale)
    (run_dir / "checkpoints" / ".tmp-mine").write_text("not ours: kept")
    capsys.readouterr()
    assert train_mlm.main(["--resume", str(run_dir), "--steps", "3", "--no-progress"]) == 0
    assert f"removed {stale}" in capsys.readouterr().err and not stale.exists()
    assert (run_dir / "checkpoints" / ".tmp-mine").exists()


# ----------------------------------------------------------------------------- corpus reading that scales


def test_a_symbolic_link_that_loops_cannot_multiply_a_corpus(tmp_path, capsys):
    folder = tmp_path / "data" / "d"
    folder.mkdir(parents=True)
    (folder / "a.txt").write_text("One sentence here.\nAnother one.\n\nA second document.\nIt ends.\n")
    os.symlink("..", folder / "up")  # a loop: d/up/d/up/...
    os.symlink(".", folder / "same")  # and a second one
    pattern = str(tmp_path / "data" / "**" / "*.txt")
    assert corpus_module.corpus_files([pattern]) == [str(folder / "a.txt")]
    os.link(folder / "a.txt", tmp_path / "data" / "hard.txt")  # the same file under another name
    assert corpus_module.corpus_files([str(tmp_path / "data"), pattern]) == [str(tmp_path / "data" / "d" / "a.txt")]
    assert "each of the 1 files is read once" in capsys.readouterr().err


def test_small_files_go_to_the_workers_in_units_and_prepare_the_same_tokens(tmp_path, monkeypatch):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(600):
        (folder / f"{i:04d}.txt").write_text(f"File {i} has a sentence.\nAnd a second one, number {i}.\n")
    manifest = token_cache.corpus_manifest([str(folder)])
    units = list(token_cache._work_units(manifest["files"], "text", None))
    assert [len(u) for u in units] == [600]  # 600 files of ~55 bytes: one unit of work, not 600
    assert all(isinstance(entry, list) for entry in units[0])  # manifest entries: the worker reads the files
    monkeypatch.setattr(token_cache, "MAX_FILES_PER_UNIT", 100)
    assert [len(u) for u in token_cache._work_units(manifest["files"], "text", None)] == [100] * 6
    vocab = token_cache.corpus_vocab([str(folder)], 200, str(tmp_path / "vocab"))
    tok = BertTokenizer(vocab)
    parallel = token_cache.prepare_corpus([str(folder)], tok, str(tmp_path / "c2"), workers=2, progress=False)
    alone = token_cache.tokenize_corpus(corpus_module.read_documents([str(folder)]), tok, str(tmp_path / "c1"))
    assert parallel.num_documents() == 600
    assert list(parallel.tokens) == list(alone.tokens)
    assert list(parallel.sentence_offsets) == list(alone.sentence_offsets)


def test_one_enormous_line_is_read_in_linear_time(tmp_path, monkeypatch):
    """A JSONL record of 2 MB read in blocks of 16 KB: the boundary searches look at each byte a bounded
    number of times (the old reader searched, and copied, the whole growing buffer at every block)."""
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps({"text": "Words of a very long document. " * 70000}) + "\n")
    searched = []
    last_boundary = corpus_module._last_boundary
    monkeypatch.setattr(corpus_module, "_last_boundary",
                        lambda buf, fmt: searched.append(len(buf)) or last_boundary(buf, fmt))
    chunks = list(corpus_module.file_chunks(str(path), chunk_bytes=1 << 14))
    assert len(chunks) == 1 and chunks[0].data == path.read_bytes()
    size = os.path.getsize(path)
    assert sum(searched) < 6 * size, (sum(searched), size)  # quadratic: ~ size^2 / 2 / 16 KB = 60x size
    assert len(corpus_module.parse_chunk(chunks[0])) == 1


def test_workers_are_capped_by_the_work_there_is(tmp_path, capsys):
    path = tmp_path / "small.txt"
    path.write_text("".join(f"Sentence {i} is here.\nAnother follows.\n\n" for i in range(300)))
    vocab = token_cache.corpus_vocab([str(path)], 200, str(tmp_path))
    token_cache.prepare_corpus([str(path)], BertTokenizer(vocab), str(tmp_path / "c"), workers=64)
    assert "1 worker(s)" in capsys.readouterr().err


def test_sigterm_during_preparation_leaves_no_temporary_files(tmp_path):
    """A real prepare_data.py process, stopped by SIGTERM while its workers tokenise: exit 143, and nothing of
    the preparation left, in the cache or in the system's temporary folder."""
    data = tmp_path / "data"
    data.mkdir()
    for i in range(40):
        (data / f"{i:02d}.txt").write_text("".join(f"Sentence {i} {j} is here.\nAnother follows.\n\n" for j in range(2500)))
    marker, scratch = tmp_path / "tokenising", tmp_path / "tmp"
    scratch.mkdir()
    hook = f"""
import sys, time, token_cache
load = token_cache._load_tokenized
def slow_load(*a):
    open({str(marker)!r}, "w").close()
    time.sleep(0.5)
    return load(*a)
token_cache._load_tokenized = slow_load
import prepare_data
sys.exit(prepare_data.main(sys.argv[1:]))
"""
    proc = signal_when(hook, ["--data", str(data), "--vocab-size", "300", "--workers", "2", "--cache-dir",
                              str(tmp_path / "cache")], marker, signal.SIGTERM, cwd=ROOT,
                       env={**os.environ, "TMPDIR": str(scratch)}, capture=True)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "terminated" and "Traceback" not in err
    assert os.listdir(scratch) == []
    assert [n for n in os.listdir(tmp_path / "cache") if n.startswith((".tmp", "corpus-"))] == []


# ----------------------------------------------------------------------------- the review's cases (each reproduced first)


def test_a_lock_file_that_is_a_link_is_refused_and_its_target_untouched(run, tmp_path, capsys):
    code, run_dir = run("--steps", "2", "--save-interval", "2", *FAST)
    victim = tmp_path / "important.txt"
    victim.write_text("keep me")
    (run_dir / ".lock").unlink()
    os.symlink(victim, run_dir / ".lock")
    capsys.readouterr()
    assert train_mlm.main(["--resume", str(run_dir), "--steps", "4", "--no-progress"]) == 2
    assert "a run folder's lock is a plain file" in one_error(capsys) and victim.read_text() == "keep me"


def test_a_copied_run_whose_checkpoints_are_a_link_cannot_write_into_the_original(run, tmp_path, capsys):
    code, original = run("--steps", "4", "--save-interval", "2", *FAST, name="orig")
    big_disk = tmp_path / "bigdisk"
    shutil.move(str(original / "checkpoints"), big_disk)
    os.symlink(big_disk, original / "checkpoints")  # the original's checkpoints kept on another disk
    copy = tmp_path / "runs" / "copy"
    shutil.copytree(original, copy, symlinks=True)  # cp -a: the link is copied as a link
    before = snapshot(big_disk)
    capsys.readouterr()
    assert train_mlm.main(["--resume", str(copy), "--steps", "6", "--no-progress"]) == 2
    assert "checkpoints is a link to" in one_error(capsys) and snapshot(big_disk) == before


def test_a_checkpoint_in_a_folder_that_is_no_run_starts_a_new_one(run, tmp_path, capsys):
    """A downloads folder that happens to hold a checkpoints/ folder is not taken for a run's: nothing in it is
    removed or overwritten (its .tmp- folder, its vocab.txt), and the run goes under --out-dir."""
    code, run_dir = run("--steps", "2", "--save-interval", "2", *FAST)
    downloads = tmp_path / "downloads"
    (downloads / "checkpoints").mkdir(parents=True)
    shutil.copy(run_dir / "checkpoints" / "step_0000002.pt", downloads / "checkpoints")
    (downloads / ".tmp-projects").mkdir()
    (downloads / "vocab.txt").write_text("mine")
    before = snapshot(downloads)
    assert train_mlm.main(["--resume", str(downloads / "checkpoints" / "step_0000002.pt"), "--steps", "3",
                           "--out-dir", str(tmp_path / "new"), "--no-progress"]) == 0
    assert snapshot(downloads) == before and (downloads / ".tmp-projects").is_dir()
    assert len(list((tmp_path / "new").iterdir())) == 1


def test_a_crafted_cache_folder_and_a_corpus_that_changed_are_refused(run, corpus, tmp_path, capsys):
    """A checkpoint naming someone's cache folder (a real cache, of another corpus) is not followed there; and
    its data position is not applied to a corpus other than the one it was taken in."""
    code, run_dir = run("--steps", "2", "--save-interval", "2", *FAST)
    other = tmp_path / "other"
    other.mkdir()
    for i in range(5):
        (other / f"{i}.txt").write_text(f"Document {i} starts here.\nIt has two sentences.\n")
    victim_cache = tmp_path / "victim-cache"
    assert run("--steps", "1", "--data", str(other), "--cache-dir", str(victim_cache), *FAST, name="victim")[0] == 0
    path = run_dir / "checkpoints" / "step_0000002.pt"
    state = torch.load(path, weights_only=True)
    state["args"].update(cache_dir=str(victim_cache), data=[str(other)])
    torch.save(state, path)
    resume = train_mlm.Resume(str(run_dir))
    values = resume.settings(vars(train_mlm.parse_args(["--resume", str(run_dir)])), {"resume"})
    assert values["cache_dir"] != str(victim_cache)  # not a cache of this run's corpus with its vocabulary
    before = snapshot(victim_cache)
    capsys.readouterr()
    assert train_mlm.main(["--resume", str(run_dir), "--steps", "4", "--no-progress", "--cache-dir",
                           str(tmp_path / "fresh-cache")]) == 1
    line = one_error(capsys)
    assert "its corpus had 40 documents" in line and "give the --data it was trained on" in line
    assert snapshot(victim_cache) == before


@pytest.mark.parametrize("change, fragment", [
    ({"data": {"epoch": 0, "block": -1, "index": 0, "cursor": 0, "seed": 1}}, "data position's block is -1"),
    ({"data": {"epoch": 0, "cursor": 10 ** 11, "seed": 1}}, "data position's cursor is 100000000000"),
    ({"rng": []}, "damaged train_mlm.py checkpoint (rng"),
    ({"args": {"clip": -1.0}}, "--clip must be positive"),
])
def test_a_crafted_position_rng_or_setting_is_one_line(run, capsys, change, fragment):
    code, run_dir = run("--steps", "2", "--save-interval", "2", *FAST)
    path = run_dir / "checkpoints" / "step_0000002.pt"
    state = torch.load(path, weights_only=True)
    for key, value in change.items():
        state[key] = {**state[key], **value} if key == "args" else value
    torch.save(state, path)
    capsys.readouterr()
    assert train_mlm.main(["--resume", str(run_dir), "--steps", "4", "--no-progress"]) == 1
    assert fragment in one_error(capsys)


def test_bytes_changed_inside_a_checkpoint_are_found(run, capsys):
    code, run_dir = run("--steps", "2", "--save-interval", "2", *FAST)
    path = run_dir / "checkpoints" / "step_0000002.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside a tensor's bytes: torch's reader would load it as it is
    path.write_bytes(bytes(data))
    capsys.readouterr()
    assert train_mlm.main(["--resume", str(run_dir), "--steps", "4", "--no-progress"]) == 1
    line = one_error(capsys)
    assert "damaged checkpoint" in line and "does not match its checksum" in line


def test_a_half_export_of_older_code_is_not_taken_for_a_finished_run(run, capsys):
    code, run_dir = run("--steps", "2", "--save-interval", "2", *FAST)
    (run_dir / "final" / "model.safetensors").unlink()  # what a kill mid-export left before exports were whole
    capsys.readouterr()
    assert train_mlm.main(["--resume", str(run_dir), "--no-progress"]) == 0
    assert "finished" not in capsys.readouterr().out and (run_dir / "final" / "model.safetensors").exists()


def test_sigterm_during_a_long_evaluation_stops_at_once(run, monkeypatch, capsys):
    """An evaluation of 100,000 batches, SIGTERM at its third: the step is saved and the run exits, without
    waiting for the rest."""
    calls = {"n": 0}
    next_batch = train_mlm.PretrainingData.next_batch

    def valid_batch_then_signal(self, batch_size, masked_lm_prob=None):
        if self.seed == 1337 + 1:  # the valid stream (seed + 1)
            calls["n"] += 1
            if calls["n"] == 3:
                os.kill(os.getpid(), signal.SIGTERM)
        return next_batch(self, batch_size, masked_lm_prob)
    monkeypatch.setattr(train_mlm.PretrainingData, "next_batch", valid_batch_then_signal)
    code, run_dir = run("--steps", "4", "--eval-interval", "2", "--eval-batches", "100000", "--viz-interval", "0")
    assert code == 128 + signal.SIGTERM and calls["n"] < 10
    assert step_files(run_dir) == ["step_0000002.pt"]


def test_sigkill_during_preparation_leaves_the_run_unlocked_and_no_worker_behind(run, corpus, tmp_path):
    """The main process killed (as the out-of-memory killer would) while its workers tokenise a resumed run's
    corpus: the workers die with it, and the run can be resumed at once."""
    code, run_dir = run("--steps", "2", "--save-interval", "2", *FAST)
    marker, pids = tmp_path / "tokenising", tmp_path / "worker-pids"
    hook = f"""
import os, sys, time, token_cache
work = token_cache._tokenize_unit_to_file
def slow_work(*a):
    with open({str(pids)!r}, "a") as f:
        f.write(f"{{os.getpid()}}\\n")
    open({str(marker)!r}, "w").close()
    time.sleep(30)
    return work(*a)
token_cache._tokenize_unit_to_file = slow_work
token_cache.CHUNK_BYTES = 1024  # many units: both workers busy
import train_mlm
sys.exit(train_mlm.main(sys.argv[1:]))
"""
    argv = ["--resume", str(run_dir), "--steps", "4", "--no-progress", "--workers", "2",
            "--cache-dir", str(tmp_path / "fresh-cache")]  # a cache without the corpus: prepared again
    signal_when(hook, argv, marker, cwd=ROOT).wait()
    workers = [int(p) for p in pids.read_text().split()]
    deadline = time.time() + 20
    while any(os.path.exists(f"/proc/{p}") and "zombie" not in open(f"/proc/{p}/status").read().lower()
              for p in workers):
        assert time.time() < deadline, "a worker outlived its killed parent"
        time.sleep(0.1)
    assert train_mlm.main(["--resume", str(run_dir), "--steps", "3", "--no-progress"]) == 0


def test_under_torchrun_every_process_uses_the_folder_the_first_one_claimed(corpus, tmp_path):
    """A loose checkpoint of a 2-process run resumed under torchrun into a generated folder whose name is taken
    (here, every name of the next two minutes): the first process numbers it (-1), writes the checkpoint's
    vocabulary there and tells the others, which read it from that folder too."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "train_mlm.py"]
    source = subprocess.run([*torchrun, *small_run_argv(corpus, tmp_path, "src", "--steps", "2", "--save-interval", "2",
                                                        "--dropout", "0")], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert source.returncode == 0, source.stderr[-2000:]
    loose = tmp_path / "loose.pt"
    shutil.copy(tmp_path / "src" / "checkpoints" / "step_0000002.pt", loose)
    out = tmp_path / "runs"
    out.mkdir()
    now = time.time()
    for i in range(-5, 120):
        (out / (time.strftime("%Y%m%d-%H%M%S-", time.localtime(now + i)) + "tiny")).mkdir(exist_ok=True)
    done = subprocess.run([*torchrun, "--resume", str(loose), "--steps", "4", "--out-dir", str(out), "--no-progress",
                           "--cache-dir", str(corpus.parent / "cache")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (claimed,) = [p for p in out.iterdir() if any(p.iterdir())]
    assert claimed.name.endswith("-tiny-1") and (claimed / "vocab.txt").read_text() == \
        checkpoints.load_checkpoint(str(loose))["vocab"]
    assert (claimed / "final" / "config.json").exists()
