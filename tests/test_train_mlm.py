"""train_mlm.py end to end, on a small real corpus the tests write (CPython's documentation topics)."""

import contextlib
import json
import math
import os
import random
import re
import signal
import subprocess
import sys

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import checkpoints
import train_mlm
from helpers import scalars, signal_at_batch, signal_when, small_run_argv
import model as model_module
from model import BertForPreTraining

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIRED_SCALARS = ["Loss/train", "Loss/train_mlm", "Loss/train_nsp", "Loss/valid", "Loss/valid_mlm",
                    "Loss/valid_nsp", "Accuracy/train_mlm", "Accuracy/valid_mlm", "Accuracy/valid_nsp",
                    "Perplexity/valid", "Optim/lr", "Optim/grad_norm", "Perf/tokens_per_sec", "Perf/mfu",
                    "Perf/step_time"]


def test_lr_schedule_decay_one_is_berts_linear_decay():
    warmup, total = 10, 100
    bert = [(s + 1) / warmup if s < warmup else (total - s) / (total - warmup) for s in range(total)]
    assert [train_mlm.lr_lambda(warmup, total)(s) for s in range(total)] == pytest.approx(bert)
    short = [train_mlm.lr_lambda(warmup, total, 0.2)(s) for s in range(total)]
    assert short[:warmup] == bert[:warmup] and short[warmup:82] == [1.0] * 72  # held until the last 18
    assert short[82:] == pytest.approx([(total - s) / 18 for s in range(82, total)])


def test_max_predictions_follows_seq_len_unless_given():
    assert train_mlm.parse_args([]).max_predictions == 16  # ceil(0.25 * 64)
    assert train_mlm.parse_args(["--seq-len", "128", "--mask-prob", "0.15"]).max_predictions == 20  # BERT's 20 at 128
    assert train_mlm.parse_args(["--seq-len", "512", "--max-predictions", "80"]).max_predictions == 80


def test_mlm_only_is_the_default_and_nsp_is_a_flag():
    assert train_mlm.parse_args([]).no_nsp is True  # measured better in a short run: docs/fine-tuning.md
    assert train_mlm.parse_args(["--nsp"]).no_nsp is False and train_mlm.parse_args(["--no-nsp"]).no_nsp is True
    assert "no_nsp" in train_mlm.parse_args(["--nsp"]).given and "no_nsp" not in train_mlm.parse_args([]).given


def test_end_to_end_logs_checkpoints_and_export(run, capsys):
    transformers = pytest.importorskip("transformers")
    code, run_dir = run("--steps", "12", "--eval-interval", "6", "--viz-interval", "6", "--save-interval", "4",
                        "--keep-last", "2", "--warmup", "3", "--decay", "0.5", "--nsp")
    out = capsys.readouterr().out
    assert code == 0
    assert "unigram baseline" in out and "valid NSP accuracy" in out
    assert f"tensorboard --logdir {run_dir.parent}" in out

    ea = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "histograms": 0, "images": 0, "tensors": 0})
    ea.Reload()
    tags = ea.Tags()
    assert set(REQUIRED_SCALARS) <= set(tags["scalars"])
    assert {"GradNorm/embeddings", "GradNorm/layer_0", "GradNorm/layer_1", "GradNorm/mlm_head"} <= set(tags["scalars"])
    assert "Weights/bert.encoder.layer.0.attention.self.query.weight" in tags["histograms"]
    assert "Grads/bert.encoder.layer.1.output.dense.weight" in tags["histograms"]
    assert {"Attention/layer_0", "Attention/layer_1"} <= set(tags["images"])
    assert [e.step for e in ea.Images("Attention/layer_0")] == [0, 6, 12]  # heat-maps over time
    assert {"MLM/predictions/text_summary", "Run/corpus/text_summary"} <= set(tags["tensors"])
    assert (run_dir / "projector_config.pbtxt").exists()
    assert os.listdir(run_dir / "hparams")
    lr = scalars(run_dir, "Optim/lr")
    # Linear warmup over 3 steps, the peak held, then linear decay over the last half of the 9 steps
    # after warmup (round(4.5) = 4 steps): lr[s] is the rate step s trained with.
    assert [lr[s] for s in range(1, 13)] == pytest.approx([1e-3 / 3, 2e-3 / 3] + [1e-3] * 7 + [7.5e-4, 5e-4, 2.5e-4])
    valid = scalars(run_dir, "Loss/valid")
    assert sorted(valid) == [6, 12]
    assert scalars(run_dir, "Perplexity/valid")[12] == pytest.approx(math.exp(scalars(run_dir, "Loss/valid_mlm")[12]), rel=1e-4)

    assert sorted(os.listdir(run_dir / "checkpoints")) == ["best.pt", "step_0000008.pt", "step_0000012.pt"]
    ckpt = torch.load(run_dir / "checkpoints" / "step_0000012.pt", weights_only=True)
    assert {"model", "optimizer", "scaler", "step", "rng", "data", "config", "vocab"} <= ckpt.keys()
    assert ckpt["step"] == 12 and ckpt["vocab"].startswith("[PAD]\n")

    # The export loads in transformers and computes what our model computes.
    final = run_dir / "final"
    settings = json.loads((final / "tokenizer_config.json").read_text())
    assert settings["model_max_length"] == 32 and settings["do_lower_case"]  # the --seq-len it was pretrained at
    ours = BertForPreTraining.from_pretrained(str(final)).eval()
    hf = transformers.BertForPreTraining.from_pretrained(final).eval()
    ids = torch.randint(5, 300, (2, 10))
    with torch.no_grad():
        assert (ours(ids).mlm_logits - hf(ids).prediction_logits).abs().max() < 1e-5
    assert (final / "vocab.txt").read_text() == ckpt["vocab"]


def test_sigterm_saves_and_resume_continues_exactly(run, monkeypatch, capsys):
    # Dropout on (the default is 0): its masks come from the RNG streams a resume must restore.
    straight_code, straight = run("--steps", "8", "--eval-interval", "4", "--viz-interval", "0", "--dropout", "0.1",
                                  name="straight")
    assert straight_code == 0
    expected = scalars(straight, "Loss/train")

    # Same run, interrupted by SIGTERM while step 5 draws its batch: it finishes step 5, saves, exits 143.
    signal_at_batch(monkeypatch, 5, signal.SIGTERM)
    code, split = run("--steps", "8", "--eval-interval", "4", "--viz-interval", "0", "--dropout", "0.1", name="split")
    assert code == 128 + signal.SIGTERM
    assert "SIGTERM: stopped at step 5" in capsys.readouterr().err
    assert sorted(os.listdir(split / "checkpoints"))[-1] == "step_0000005.pt"
    monkeypatch.undo()

    assert train_mlm.main(["--resume", str(split), "--no-progress"]) == 0
    resumed = scalars(split, "Loss/train")
    assert sorted(resumed) == list(range(1, 9))
    for step in range(1, 9):
        assert resumed[step] == pytest.approx(expected[step], abs=1e-6), step
    assert scalars(split, "Optim/lr") == pytest.approx(scalars(straight, "Optim/lr"))


def test_resume_across_blocks_of_the_lazy_stream_continues_exactly(run, monkeypatch):
    """Blocks of 8 instances (2 steps): the run crosses blocks before and after the stop (Ctrl-C)."""
    flags = ("--steps", "24", "--eval-interval", "12", "--viz-interval", "0", "--shuffle-buffer", "8",
             "--save-interval", "100")
    assert run(*flags, name="straight")[0] == 0
    signal_at_batch(monkeypatch, 13, signal.SIGINT)
    code, split = run(*flags, name="split")
    assert code == 130
    state = torch.load(split / "checkpoints" / "step_0000013.pt", weights_only=True)["data"]
    assert state["block"] > 0 and 0 < state["index"] and state["cursor"] == 13 * 4  # mid-block, 52 instances in
    monkeypatch.undo()
    assert train_mlm.main(["--resume", str(split), "--no-progress"]) == 0
    straight = scalars(split.parent / "straight", "Loss/train")
    resumed = scalars(split, "Loss/train")
    assert sorted(resumed) == list(range(1, 25))
    assert [resumed[s] for s in range(14, 25)] == pytest.approx([straight[s] for s in range(14, 25)], abs=1e-6)
    assert scalars(split, "Loss/valid")[24] == pytest.approx(scalars(split.parent / "straight", "Loss/valid")[24], abs=1e-6)


def test_resuming_a_run_saved_before_decay_existed_keeps_berts_schedule(run):
    code, run_dir = run("--steps", "4", "--warmup", "2", "--decay", "1", "--viz-interval", "0", "--save-interval", "4")
    assert code == 0
    path = run_dir / "checkpoints" / "step_0000004.pt"
    ckpt = torch.load(path, weights_only=True)
    del ckpt["args"]["decay"]  # as written before --decay existed
    torch.save(ckpt, path)
    assert train_mlm.main(["--resume", str(run_dir), "--steps", "8", "--no-progress"]) == 0
    lr = scalars(run_dir, "Optim/lr")
    # BERT's decay over the 6 steps after warmup, not the default --decay 0.2's held peak
    assert [lr[s] for s in range(5, 9)] == pytest.approx([1e-3 * (9 - s) / 6 for s in range(5, 9)])


def stopped_and_resumed(run, monkeypatch, flags: list[str], batch: int) -> dict:
    """The run of `flags`, stopped by SIGTERM while it draws its `batch`-th batch and resumed: Loss/train by step."""
    signal_at_batch(monkeypatch, batch, signal.SIGTERM)
    code, split = run(*flags, name="split")
    assert code == 128 + signal.SIGTERM
    monkeypatch.undo()
    assert train_mlm.main(["--resume", str(split), "--no-progress"]) == 0
    return scalars(split, "Loss/train")


def test_short_context_steps_read_blocks_and_a_stop_inside_them_resumes_exactly(run, monkeypatch):
    flags = ["--steps", "8", "--short-context", "4", "--short-len", "8", "--eval-interval", "4", "--viz-interval",
             "0", "--save-interval", "100"]
    code, straight = run(*flags, name="straight")
    assert code == 0
    code, whole = run(*flags, "--short-context", "0", name="whole")  # the last flag wins
    assert code == 0
    # The same weights and batch at step 1: only the blocks differ, so the losses do.
    assert scalars(straight, "Loss/train")[1] != pytest.approx(scalars(whole, "Loss/train")[1], abs=1e-4)

    resumed = stopped_and_resumed(run, monkeypatch, flags, 3)  # inside the short-context steps
    expected = scalars(straight, "Loss/train")
    assert [resumed[s] for s in range(1, 9)] == pytest.approx([expected[s] for s in range(1, 9)], abs=1e-6)


def test_a_falling_masking_rate_runs_from_first_to_last_step_and_resumes_exactly(run, monkeypatch):
    s = train_mlm.Settings(mask_prob=0.4, mask_prob_end=0.1, steps=11, grad_accum=2)
    at_step_5 = train_mlm.masking_schedule(s, 5)  # a resumed run's prefetcher: its batches from step 5 on
    assert [at_step_5(k) for k in (0, 1, 2, 11)] == pytest.approx([0.25, 0.25, 0.22, 0.1])
    assert train_mlm.masking_schedule(train_mlm.Settings(mask_prob_end=None), 0) is None
    assert train_mlm.parse_args(["--mask-prob", "0.15", "--mask-prob-end", "0.3"]).max_predictions == 20

    flags = ["--steps", "8", "--mask-prob", "0.4", "--mask-prob-end", "0.1", "--eval-interval", "4",
             "--viz-interval", "0", "--save-interval", "100"]
    code, straight = run(*flags, name="straight")
    assert code == 0
    resumed = stopped_and_resumed(run, monkeypatch, flags, 5)
    expected = scalars(straight, "Loss/train")
    assert [resumed[s] for s in range(1, 9)] == pytest.approx([expected[s] for s in range(1, 9)], abs=1e-6)
    code, constant = run(*flags[:4], *flags[6:], name="constant")  # 40% throughout: the same first step
    assert code == 0
    assert scalars(constant, "Loss/train")[1] == pytest.approx(expected[1], abs=1e-6)
    assert scalars(constant, "Loss/train")[8] != pytest.approx(expected[8], abs=1e-3)


def test_resume_with_more_steps_a_new_lr_and_weight_decay_uses_them(run):
    code, run_dir = run("--steps", "4", "--warmup", "0.5", "--decay", "1", "--viz-interval", "0", "--save-interval", "4")
    assert code == 0
    assert train_mlm.main(["--resume", str(run_dir), "--steps", "6", "--lr", "5e-4", "--weight-decay", "0.05",
                           "--no-progress"]) == 0
    lr = scalars(run_dir, "Optim/lr")
    # warmup stays the 2 steps it was (not half of the new 6); the decay runs over the 4 steps after it
    assert [lr[s] for s in (5, 6)] == pytest.approx([5e-4 * 2 / 4, 5e-4 * 1 / 4])
    ckpt = torch.load(run_dir / "checkpoints" / "step_0000006.pt", weights_only=True)
    assert ckpt["args"]["lr"] == 5e-4 and ckpt["args"]["warmup"] == 2
    assert [g["weight_decay"] for g in ckpt["optimizer"]["param_groups"]] == [0.05, 0.0]


def break_loss_at(monkeypatch, step: int, head: str, bad) -> None:
    """The model's training forward returns bad(loss) for `head` ('mlm_loss' or 'nsp_loss') at `step`."""
    forward = BertForPreTraining.forward
    calls = {"n": 0}

    def broken_forward(self, *a, **kw):
        out = forward(self, *a, **kw)
        if self.training:
            calls["n"] += 1
            if calls["n"] == step:
                return out._replace(**{head: bad(getattr(out, head))})
        return out

    monkeypatch.setattr(BertForPreTraining, "forward", broken_forward)


def test_nan_loss_stops_without_overwriting_checkpoints(run, monkeypatch, capsys):
    break_loss_at(monkeypatch, 5, "mlm_loss", lambda loss: loss * float("nan"))
    code, run_dir = run("--steps", "8", "--save-interval", "2", "--eval-interval", "2", "--viz-interval", "0")
    assert code == 3
    err = capsys.readouterr().err
    assert "loss is nan at step 5" in err
    assert sorted(os.listdir(run_dir / "checkpoints")) == ["best.pt", "step_0000002.pt", "step_0000004.pt"]
    assert torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)["step"] == 4
    assert not (run_dir / "final").exists()


def test_gradient_accumulation_matches_a_big_batch(run):
    """Batch 8 = 2 x 4 accumulated: the same instances and the same token-weighted losses."""
    flags = ("--steps", "3", "--dropout", "0", "--viz-interval", "0", "--eval-interval", "3")
    code_big, big = run(*flags, "--batch-size", "8", name="big")
    code_accum, accum = run(*flags, "--batch-size", "4", "--grad-accum", "2", name="accum")
    assert code_big == code_accum == 0
    big, accum = scalars(big, "Loss/train"), scalars(accum, "Loss/train")
    for step in (1, 2, 3):
        assert accum[step] == pytest.approx(big[step], abs=1e-5)


def test_no_nsp_and_whole_word_masking(run):
    code, run_dir = run("--steps", "3", "--no-nsp", "--whole-word-masking", "--viz-interval", "0",
                        "--eval-interval", "3", name="mlm_only")
    assert code == 0
    ea = EventAccumulator(str(run_dir))
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    assert "Loss/train_nsp" not in tags and "Accuracy/valid_nsp" not in tags
    assert scalars(run_dir, "Loss/train") == scalars(run_dir, "Loss/train_mlm")


@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "--steps must be positive"),
    (["--config", "huge"], "invalid choice: 'huge'"),
    (["--valid-fraction", "1.5"], "--valid-fraction must be between 0 and 1"),
    (["--mask-prob", "2"], "--mask-prob must be in [0, 1)"),
    (["--dropout", "1.5"], "--dropout must be in [0, 1)"),
    (["--decay", "0"], "--decay must be in (0, 1]"),
])
def test_bad_flags_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        train_mlm.main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_input_is_one_clear_line(run, tmp_path, capsys):
    assert run("--data", str(tmp_path / "missing.txt"))[0] == 1
    assert run("--vocab", str(tmp_path / "no-vocab.txt"))[0] == 1
    assert run("--precision", "fp16", "--device", "cpu")[0] == 2
    assert run("--hidden", "30", "--heads", "4")[0] == 2
    assert run("--device", "tpu9")[0] == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5 and all(line.startswith("error: ") for line in err), err
    assert "missing.txt" in err[0] and "no-vocab.txt" in err[1] and "fp16" in err[2] and "--hidden" in err[3]
    assert "--device tpu9: not a device" in err[4]


def test_two_processes_match_one_with_the_same_global_batch(corpus, tmp_path):
    """torchrun with 2 gloo processes of batch 4 == 1 process of batch 8 (no dropout), on a corpus
    prepared by prepare_data.py."""
    common = ["--data", str(corpus), "--config", "tiny", "--hidden", "32", "--heads", "2", "--seq-len", "32",
              "--vocab-size", "300", "--max-predictions", "5", "--eval-batches", "2", "--steps", "3",
              "--dropout", "0", "--viz-interval", "0", "--eval-interval", "3", "--log-interval", "1",
              "--no-progress", "--cache-dir", str(corpus.parent / "cache"), "--out-dir", str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    prepared = subprocess.run([sys.executable, "prepare_data.py", "--data", str(corpus), "--vocab-size", "300",
                               "--cache-dir", str(corpus.parent / "cache")], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
    assert prepared.returncode == 0, prepared.stderr
    one = subprocess.run([sys.executable, "train_mlm.py", *common, "--batch-size", "8", "--run-name", "one"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "train_mlm.py", *common, "--batch-size", "4", "--run-name", "two"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr
    assert "4 x 1 accum x 2 processes = 8 sequences" in two.stdout
    assert "prepared " not in one.stderr + two.stderr  # both opened the prepared corpus
    a, b = scalars(tmp_path / "one", "Loss/train"), scalars(tmp_path / "two", "Loss/train")
    assert sorted(a) == sorted(b) == [1, 2, 3]
    for step in a:
        assert b[step] == pytest.approx(a[step], abs=1e-4)
    va, vb = scalars(tmp_path / "one", "Loss/valid"), scalars(tmp_path / "two", "Loss/valid")
    assert vb[3] == pytest.approx(va[3], abs=1e-4)


def test_output_to_a_file_gets_plain_lines_not_a_bar(corpus, tmp_path):
    """A run whose output is not a terminal (a log on a cluster) prints a line every --log-interval steps
    with the ETA, and no carriage returns."""
    argv = [sys.executable, "train_mlm.py", "--data", str(corpus), "--config", "tiny", "--hidden", "32", "--heads", "2",
            "--seq-len", "32", "--batch-size", "4", "--vocab-size", "300", "--max-predictions", "5", "--steps", "4",
            "--eval-batches", "1", "--log-interval", "2", "--viz-interval", "0", "--cache-dir",
            str(corpus.parent / "cache"), "--out-dir", str(tmp_path), "--run-name", "log"]
    r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stdout + r.stderr
    lines = [line for line in r.stdout.splitlines() if line.startswith("step ")]
    assert [line.split(":")[0] for line in lines] == ["step 2/4", "step 4/4"]
    assert all(" tok/s, " in line and ", ETA 0:00:" in line for line in lines)


@pytest.mark.parametrize("head,value", [("mlm_loss", "inf"), ("nsp_loss", "nan"), ("nsp_loss", "inf")])
def test_non_finite_mlm_or_nsp_loss_stops_without_overwriting_checkpoints(run, monkeypatch, capsys, head, value):
    break_loss_at(monkeypatch, 3, head, lambda loss: loss + float(value))
    code, run_dir = run("--steps", "6", "--save-interval", "2", "--eval-interval", "2", "--viz-interval", "0", "--nsp")
    assert code == 3
    assert f"loss is {value} at step 3" in capsys.readouterr().err
    assert sorted(os.listdir(run_dir / "checkpoints")) == ["best.pt", "step_0000002.pt"]
    assert torch.load(run_dir / "checkpoints" / "step_0000002.pt", weights_only=True)["step"] == 2


def test_a_truncated_checkpoint_is_named_and_an_older_one_resumes(run, capsys):
    code, run_dir = run("--steps", "4", "--save-interval", "2", "--eval-interval", "4", "--viz-interval", "0")
    assert code == 0
    newest = run_dir / "checkpoints" / "step_0000004.pt"
    with open(newest, "r+b") as f:
        f.truncate(os.path.getsize(newest) // 2)
    capsys.readouterr()
    assert train_mlm.main(["--resume", str(run_dir), "--steps", "6", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    older = run_dir / "checkpoints" / "step_0000002.pt"
    assert len(err) == 1 and err[0].startswith(f"error: {newest}: cannot read checkpoint")
    assert err[0].endswith(f"resume from an older one in a new folder, --resume {older} --run-name NEW_NAME, or move "
                           f"step_0000004.pt out of {run_dir / 'checkpoints'} and --resume {older}")
    assert train_mlm.main(["--resume", str(older), "--steps", "6", "--no-progress"]) == 0
    assert sorted(scalars(run_dir, "Loss/train")) == list(range(1, 7))


def test_sigkill_while_a_checkpoint_is_written_keeps_the_previous_one(corpus, tmp_path):
    """The process is killed inside the save of step 4's checkpoint (its bytes written, not yet renamed):
    step 2's checkpoint is intact and --resume continues from it."""
    marker = tmp_path / "saving"
    hook = f"""
import os, sys, time, train_mlm
fsync = os.fsync
def slow_fsync(fd):
    fsync(fd)
    if "/checkpoints/.tmp-" in os.readlink(f"/proc/self/fd/{{fd}}") and os.path.exists({str(tmp_path / "step2")!r}):
        open({str(marker)!r}, "w").close()
        time.sleep(60)
    elif "/checkpoints/.tmp-" in os.readlink(f"/proc/self/fd/{{fd}}"):
        open({str(tmp_path / "step2")!r}, "w").close()
os.fsync = slow_fsync
sys.exit(train_mlm.main(sys.argv[1:]))
"""
    argv = ["--data", str(corpus), "--config", "tiny", "--hidden", "32", "--heads", "2", "--seq-len", "32",
            "--batch-size", "4", "--vocab-size", "300", "--max-predictions", "5", "--eval-batches", "1",
            "--steps", "6", "--save-interval", "2", "--eval-interval", "100", "--viz-interval", "0",
            "--log-interval", "1", "--no-progress", "--cache-dir", str(corpus.parent / "cache"),
            "--out-dir", str(tmp_path), "--run-name", "killed"]
    signal_when(hook, argv, marker, cwd=ROOT).wait()
    ckpts = tmp_path / "killed" / "checkpoints"
    names = sorted(os.listdir(ckpts))
    assert "step_0000002.pt" in names and "step_0000004.pt" not in names
    assert [n for n in names if n.startswith(".tmp-")]  # the half-done save, never taken for a checkpoint
    assert torch.load(ckpts / "step_0000002.pt", weights_only=True)["step"] == 2
    assert train_mlm.main(["--resume", str(tmp_path / "killed"), "--no-progress"]) == 0
    assert not [n for n in os.listdir(ckpts) if n.startswith(".tmp-")]  # removed at the resumed start
    # steps 3-6 logged by the resumed run (a killed process may not have flushed its own events)
    assert set(range(3, 7)) <= set(scalars(tmp_path / "killed", "Loss/train"))
    assert torch.load(ckpts / "step_0000006.pt", weights_only=True)["step"] == 6 and (tmp_path / "killed" / "final").is_dir()


def stop_at_step(cmd, step, sig, env=None, pids=None):
    """Run cmd, send sig (to the pids that pids(proc) gives, default the process) once it has logged
    `step`, and return (exit code, output)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    out = []
    for line in proc.stdout:
        out.append(line)
        if line.startswith(f"step {step}/"):
            for pid in (pids(proc) if pids else [proc.pid]):
                os.kill(pid, sig)
            break
    rest, _ = proc.communicate(timeout=300)
    return proc.returncode, "".join(out) + rest


def assert_same_final_state(a, b):
    """Bitwise: the weights, the optimizer's moments and step counts, the data position."""
    sa, sb = (torch.load(p, weights_only=True) for p in (a, b))
    assert list(sa["model"]) == list(sb["model"])
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k]), k
    oa, ob = sa["optimizer"]["state"], sb["optimizer"]["state"]
    assert sorted(oa) == sorted(ob) and len(oa) > 0
    for i in oa:
        for k in oa[i]:
            assert torch.equal(oa[i][k], ob[i][k]), (i, k)
    assert sa["data"] == sb["data"] and sa["step"] == sb["step"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_real_process_stopped_by_a_signal_resumes_bitwise(corpus, tmp_path, sig):
    """Ctrl-C (SIGINT) or SIGTERM to a real train_mlm.py process in mid-run: it finishes the step, saves,
    exits 128+signal; --resume to the end gives the same losses, weights and optimizer state, bit for bit,
    as a run that never stopped (CPU, the same threads)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    dropout = ("--dropout", "0.1")  # on: its masks come from the RNG streams the resume must restore
    straight = subprocess.run([sys.executable, "train_mlm.py", *small_run_argv(corpus, tmp_path, "straight", *dropout)],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr
    code, out = stop_at_step([sys.executable, "train_mlm.py", *small_run_argv(corpus, tmp_path, "split", *dropout)],
                             4, sig, env=env)
    assert code == 128 + sig, out
    stopped = int(out.split(f"{signal.Signals(sig).name}: stopped at step ")[1].split(";")[0])
    assert 4 <= stopped < 10 and f"--resume {tmp_path / 'split'}" in out
    resumed = subprocess.run([sys.executable, "train_mlm.py", "--resume", str(tmp_path / "split"), "--no-progress"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    want, got = scalars(tmp_path / "straight", "Loss/train"), scalars(tmp_path / "split", "Loss/train")
    assert sorted(got) == list(range(1, 11)) and all(got[s] == want[s] for s in range(stopped + 1, 11))
    assert scalars(tmp_path / "split", "Loss/valid")[10] == scalars(tmp_path / "straight", "Loss/valid")[10]
    assert_same_final_state(tmp_path / "straight" / "checkpoints" / "step_0000010.pt",
                            tmp_path / "split" / "checkpoints" / "step_0000010.pt")


def test_two_processes_stopped_and_resumed_match_an_uninterrupted_pair(corpus, tmp_path):
    """torchrun with 2 gloo processes: SIGTERM to both workers (as a cluster's scheduler sends it) in
    mid-run, then --resume under torchrun: the same losses and final state as 2 processes that never
    stopped."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "train_mlm.py"]
    straight = subprocess.run([*torchrun, *small_run_argv(corpus, tmp_path, "straight", "--dropout", "0")],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr

    def workers(proc):
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
            return [int(p) for p in f.read().split()]
    code, out = stop_at_step([*torchrun, *small_run_argv(corpus, tmp_path, "split", "--dropout", "0")], 4,
                             signal.SIGTERM, env=env, pids=workers)
    assert "SIGTERM: stopped at step" in out, out
    resumed = subprocess.run([*torchrun, "--resume", str(tmp_path / "split"), "--no-progress"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    want, got = scalars(tmp_path / "straight", "Loss/train"), scalars(tmp_path / "split", "Loss/train")
    assert sorted(got) == list(range(1, 11))
    for s in range(1, 11):
        assert got[s] == pytest.approx(want[s], abs=1e-6), s
    assert_same_final_state(tmp_path / "straight" / "checkpoints" / "step_0000010.pt",
                            tmp_path / "split" / "checkpoints" / "step_0000010.pt")


def test_a_checkpoint_written_before_the_restructuring_resumes_exactly(tmp_path, monkeypatch):
    """tests/fixtures/run_v1: step 4 of an 8-step run saved by train_mlm.py as it was before the training
    loop was restructured (commit efcd91f), with the losses, valid loss, final weights and Adam moments
    of that run left uninterrupted. Today's code resumes the old file and must land on the same numbers.
    That run (dropout 0.1) drew its dropout masks with torch's own CPU mask, as model.dropout did not yet
    exist: the test draws them so too, since what it checks is the file and the loop, not the mask."""
    monkeypatch.setattr(model_module, "dropout", torch.nn.functional.dropout)
    fixture = os.path.join(ROOT, "tests", "fixtures", "run_v1")
    with open(os.path.join(fixture, "expected.json")) as f:
        expected = json.load(f)
    run_dir = tmp_path / "runs" / "old"
    (run_dir / "checkpoints").mkdir(parents=True)
    with open(os.path.join(fixture, "step_0000004.pt"), "rb") as src:
        (run_dir / "checkpoints" / "step_0000004.pt").write_bytes(src.read())
    # The old run's paths (its corpus, cache and run folder) are given anew; every other setting is the file's.
    assert train_mlm.main(["--resume", str(run_dir), "--data", os.path.join(fixture, "corpus"),
                           "--cache-dir", str(tmp_path / "cache"), "--out-dir", str(tmp_path / "runs"),
                           "--run-name", "old"]) == 0
    train_loss = scalars(run_dir, "Loss/train")
    assert [train_loss[s] for s in range(5, 9)] == pytest.approx(list(expected["train_loss"].values()), rel=1e-5)
    assert scalars(run_dir, "Loss/valid")[8] == pytest.approx(expected["valid_loss_step_8"], rel=1e-5)
    final = torch.load(run_dir / "checkpoints" / "step_0000008.pt", weights_only=True)
    sums = {k: float(v.double().abs().sum()) for k, v in final["model"].items() if v.is_floating_point()}
    assert sums.keys() == expected["final_weight_abs_sums"].keys()
    # abs=1e-8 for the attention key biases: their gradient is zero in exact arithmetic (a softmax does not
    # move when every score of a query shifts alike), so they hold only rounding noise of ~1e-9, which
    # differs between CPUs' matmul kernels. Every other sum is 10^4 or more times larger.
    assert sums == pytest.approx(expected["final_weight_abs_sums"], rel=1e-5, abs=1e-8)
    exp_avg = sum(float(s["exp_avg"].double().abs().sum()) for s in final["optimizer"]["state"].values())
    assert exp_avg == pytest.approx(expected["final_exp_avg_abs_sum"], rel=1e-5)


# ----------------------------------------------------------------------------- the loop's pieces, alone


def synthetic_batch(generator, n, seq_len=16, predictions=5, masked=5, vocab=50):
    """n sequences with `masked` real predictions each (the rest of the max_predictions slots padding)."""
    weights = torch.zeros(n, predictions)
    weights[:, :masked] = 1
    return {"input_ids": torch.randint(5, vocab, (n, seq_len), generator=generator),
            "token_type_ids": torch.zeros(n, seq_len, dtype=torch.long),
            "attention_mask": torch.ones(n, seq_len, dtype=torch.long),
            "masked_lm_positions": torch.randint(1, seq_len, (n, predictions), generator=generator),
            "masked_lm_ids": torch.randint(5, vocab, (n, predictions), generator=generator),
            "masked_lm_weights": weights,
            "next_sentence_labels": torch.randint(0, 2, (n,), generator=generator)}


def test_forward_backward_weights_micro_batches_as_one_big_batch():
    """Two micro-batches with 1 and 5 masked tokens per sequence give the gradient and the losses of the
    one batch that holds both: the MLM loss is a mean over masked tokens, not over micro-batches (a plain
    average of the two micro-batch losses would weight a token of the first five times as much)."""
    from model import BertConfig, BertForPreTraining
    g = torch.Generator().manual_seed(0)
    a, b = synthetic_batch(g, 3, masked=1), synthetic_batch(g, 3, masked=5)
    both = {k: torch.cat([a[k], b[k]]) for k in a}
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, hidden_dropout_prob=0, attention_probs_dropout_prob=0)
    torch.manual_seed(0)
    model = BertForPreTraining(config)
    scaler = torch.amp.GradScaler("cpu", enabled=False)

    def grads_and_stats(micro):
        model.zero_grad(set_to_none=True)
        stats = train_mlm.forward_backward(model, micro, scaler, contextlib.nullcontext(), no_nsp=False)
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, stats
    accumulated, accumulated_stats = grads_and_stats([a, b])
    whole, whole_stats = grads_and_stats([both])
    assert accumulated.keys() == whole.keys() and len(whole) == len(list(model.parameters()))
    for name in whole:
        torch.testing.assert_close(accumulated[name], whole[name], rtol=1e-4, atol=1e-6, msg=name)
    assert accumulated_stats == pytest.approx(whole_stats, rel=1e-5)
    mlm_a, mlm_b = (model(**{k: v for k, v in x.items()}).mlm_loss.item() for x in (a, b))
    assert abs((mlm_a + mlm_b) / 2 - whole_stats[0]) > 1e-3  # the naive average is measurably different


def test_checkpointer_keeps_the_last_k_and_best_only_when_better(tmp_path):
    class Counter:
        def __init__(self):
            self.n = 0

        def state_dict(self):
            return {"n": self.n}
    counter = Counter()
    ckpt = checkpoints.Checkpointer(str(tmp_path / "ck"), keep_last=2, write=True, best_valid=math.inf,
                                  parts={"data": counter, "vocab": "a\nb\n"})
    for step in range(1, 5):
        counter.n = step
        ckpt.save_step(step)
    assert sorted(os.listdir(tmp_path / "ck")) == ["step_0000003.pt", "step_0000004.pt"]
    state = torch.load(tmp_path / "ck" / "step_0000004.pt", weights_only=True)
    assert (state["step"], state["data"], state["vocab"], state["best_valid_loss"]) == (4, {"n": 4}, "a\nb\n", math.inf)
    assert set(state["rng"]) == {"python", "numpy", "torch", "cuda"}
    assert ckpt.improves(2.0) and not ckpt.improves(2.5) and not ckpt.improves(2.0) and ckpt.improves(1.5)
    ckpt.save("best.pt", 4)
    assert torch.load(tmp_path / "ck" / "best.pt", weights_only=True)["best_valid_loss"] == 1.5


def test_settings_are_resolved_once_and_read_only():
    s = train_mlm.resolve_settings(train_mlm.parse_args(["--steps", "200", "--warmup", "0.1"]), None)
    assert s.warmup == 20 and s.max_predictions == 16 and s.run_name.endswith("-tiny")
    with pytest.raises(AttributeError, match="read-only"):
        s.steps = 300


def test_the_eta_is_smoothed_and_each_evaluation_says_the_valid_loss(run, monkeypatch, capsys):
    """A captured run (lines as a log file gets them) on a machine whose load changes: every step takes 1 to 3
    seconds of a fake clock, at random. From the third line on, the finish the ETA projects (time so far +
    ETA) moves by at most 25% from one line to the next; an ETA from each window's own rate would not."""
    rng, clock, finished_at = random.Random(0), {"now": 0.0}, []
    forward_backward = train_mlm.forward_backward

    def loaded_forward_backward(*args, **kwargs):
        clock["now"] += rng.uniform(1, 3)  # the step's time, as the loop measures it
        finished_at.append(clock["now"])
        return forward_backward(*args, **kwargs)
    monkeypatch.setattr(train_mlm, "forward_backward", loaded_forward_backward)
    monkeypatch.setattr(train_mlm.time, "perf_counter", lambda: clock["now"])
    monkeypatch.setattr(train_mlm, "measure_peak_flops", lambda *args: 1e12)
    code, _ = run("--steps", "60", "--log-interval", "3", "--eval-interval", "20", "--viz-interval", "0", "--nsp")
    out = capsys.readouterr().out
    assert code == 0
    lines = [(int(m[1]), int(m[2]) * 3600 + int(m[3]) * 60 + int(m[4]))
             for m in re.finditer(r"^step (\d+)/60: .* ETA (\d+):(\d\d):(\d\d)$", out, re.M)]
    assert [step for step, _ in lines] == list(range(3, 61, 3))
    projected = [finished_at[step - 1] + eta for step, eta in lines]
    changes = [abs(b / a - 1) for a, b in zip(projected[2:], projected[3:])]
    assert max(changes) <= 0.25, changes
    windows = [(finished_at[s - 1] - (finished_at[s - 4] if s > 3 else 0)) / 3 for s, _ in lines]
    raw = [finished_at[s - 1] + (60 - s) * w for (s, _), w in zip(lines, windows)]
    assert max(abs(b / a - 1) for a, b in zip(raw[2:], raw[3:])) > 0.25  # what the smoothing is for
    evals = re.findall(r"^eval at step (\d+): valid loss \d+\.\d{4} \(MLM \d+\.\d{4} \+ NSP \d\.\d{4}\), MLM accuracy "
                       r"\d+\.\d\d% \(unigram baseline \d+\.\d\d%\), NSP accuracy \d+\.\d%$", out, re.M)
    assert evals == ["20", "40", "60"]
    assert "next, fine-tune it: python finetune_cls.py --init " in out


def test_a_time_budget_run_is_exactly_the_steps_run_it_fitted(run, capsys):
    """--minutes times the step on the run's own batches, puts everything back, and trains the steps that fit:
    the same run, loss for loss, as --steps of that count (which is how it resumes)."""
    code, budget = run("--minutes", "0.2", "--viz-interval", "0", name="budget")
    out, err = capsys.readouterr()
    assert code == 0, err
    steps = int(re.search(r"steps: ([\d,]+) fit --minutes 0.2 \(", out)[1].replace(",", ""))
    assert re.search(rf"time budget: 0:00:12 \(--minutes 0.2\), took \d:\d\d:\d\d \([+-]\d+%\), {steps:,} steps", out)
    saved = checkpoints.load_checkpoint(str(budget / "checkpoints" / f"step_{steps:07d}.pt"))["args"]
    assert saved["steps"] == steps and saved["minutes"] == 0.2 and saved["warmup"] == int(0.06 * steps)
    code, fixed = run("--steps", str(steps), "--viz-interval", "0", name="fixed")
    assert code == 0
    assert scalars(budget, "Loss/train") == scalars(fixed, "Loss/train")
    assert scalars(budget, "Optim/lr") == scalars(fixed, "Optim/lr")
    assert scalars(budget, "Loss/valid") == scalars(fixed, "Loss/valid")
    # resumed, it is the run of that many steps: finished, nothing timed again
    assert train_mlm.main(["--resume", str(budget), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"the run is finished at step {steps} of {steps}" in out and "timing" not in out


def test_a_budget_too_small_for_one_step_is_one_line_and_leaves_no_run_folder(run, capsys):
    code, folder = run("--minutes", "0.0001", name="too-short")
    err = capsys.readouterr().err
    assert code == 2 and not folder.exists()
    assert [line for line in err.splitlines() if line.strip()] == [
        line for line in err.splitlines() if line.startswith("error: --minutes 0.0001: the set-up took")], err
