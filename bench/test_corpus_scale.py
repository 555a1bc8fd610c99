"""Corpus scale, measured on real processes: preparation throughput with 1 and 2 workers, and a
pretraining run's peak memory (its whole process tree, by PSS: workers included, shared pages counted
once) and time to its first step, cold (vocabulary and preparation included) and warm (the cache opened);
and the corpora that used to be slow: many small files, and one enormous line.

The corpora are made by bench/make_corpus.py from the embedded corpus's real sentences, varied. Sizes
come from --bench-corpus-mb (default 2: the smoke size CI runs, which checks that every figure is
there, finite and positive; docs/data.md's table: --bench-corpus-mb 100,1000), --bench-small-files
(default 2000; docs/data.md: 100000) and --bench-long-line-mb (default 2; docs/data.md: 200)."""

from __future__ import annotations

import json
import math
import os
import random
import re
import sys

import pytest

from make_corpus import source_sentences, write_corpus
from proc_watch import first_time, watch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = ["--steps", "20", "--no-progress", "--log-interval", "1", "--viz-interval", "0", "--eval-interval", "20",
         "--workers", "2"]


def pytest_generate_tests(metafunc):
    if "corpus_mb" in metafunc.fixturenames:
        sizes = [float(x) for x in str(metafunc.config.getoption("bench_corpus_mb", "2")).split(",")]
        metafunc.parametrize("corpus_mb", sizes, ids=[f"{x:g}MB" for x in sizes], scope="module")


@pytest.fixture(scope="module")
def corpus_dir(corpus_mb, tmp_path_factory) -> str:
    """A folder of 10 files of corpus_mb MB in all (one file below 10 MB), and a vocabulary for it."""
    folder = tmp_path_factory.mktemp(f"corpus{corpus_mb:g}")
    files = 10 if corpus_mb >= 10 else 1
    write_corpus(str(folder / ("corpus" if files > 1 else "corpus.txt")), corpus_mb, files=files,
                 cache_dir=str(tmp_path_factory.getbasetemp() / "default-corpus"))
    return str(folder / ("corpus" if files > 1 else "corpus.txt"))


@pytest.fixture(scope="module")
def vocab(corpus_dir, tmp_path_factory) -> str:
    from token_cache import corpus_vocab
    return corpus_vocab([corpus_dir], 8192, str(tmp_path_factory.mktemp("vocab")))


def check_figures(info: dict) -> None:
    for key, value in info.items():
        if isinstance(value, float):
            assert math.isfinite(value) and value > 0, (key, value)


def mb(x: float) -> float:
    return x / 1e6


@pytest.mark.parametrize("workers", [1, 2])
def test_prepare(benchmark, corpus_mb, corpus_dir, vocab, workers, tmp_path, measured):
    cmd = [sys.executable, "prepare_data.py", "--data", corpus_dir, "--vocab", vocab,
           "--cache-dir", str(tmp_path / "cache"), "--workers", str(workers)]
    benchmark.group = "corpus"
    result = benchmark.pedantic(lambda: watch(cmd, cwd=ROOT), rounds=1, iterations=1)
    assert result["returncode"] == 0, result["lines"][-5:]
    line = next(text for _, text in result["lines"] if text.startswith("prepared "))
    size, seconds = re.search(r"([\d,.]+) MB in ([\d.]+)s", line).groups()
    size, seconds = float(size.replace(",", "")), float(seconds)
    info = dict(what="prepare", corpus_mb=corpus_mb, workers=workers, seconds=seconds,
                mb_per_s=size / max(seconds, 1e-3), peak_pss_mb=mb(result["peak_pss"]),
                processes=result["processes"])
    measured[("prepare", corpus_mb, workers)] = info["mb_per_s"]
    if workers == 2 and ("prepare", corpus_mb, 1) in measured:
        info["speedup_vs_1_worker"] = info["mb_per_s"] / measured[("prepare", corpus_mb, 1)]
    check_figures(info)
    benchmark.extra_info.update(info)


@pytest.mark.parametrize("start", ["cold", "warm"])
def test_pretraining_start(benchmark, corpus_mb, corpus_dir, start, tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / f"train-cache-{corpus_mb:g}"  # the cold run fills it
    if start == "cold":
        assert not cache.exists()
    cmd = [sys.executable, "train_mlm.py", "--data", corpus_dir, "--cache-dir", str(cache),
           "--out-dir", str(tmp_path_factory.mktemp("runs")), "--run-name", start, *TRAIN]
    benchmark.group = "corpus"
    result = benchmark.pedantic(lambda: watch(cmd, cwd=ROOT), rounds=1, iterations=1)
    assert result["returncode"] == 0, result["lines"][-5:]
    assert any(text.startswith("prepared ") for _, text in result["lines"]) == (start == "cold")
    rates = [float(m.group(1).replace(",", "")) for _, text in result["lines"]
             if (m := re.match(r"step \d+/\d+: .* ([\d,]+) tok/s", text))]
    info = dict(what="pretraining start", corpus_mb=corpus_mb, start=start,
                first_step_s=first_time(result, "step 1/"), seconds=result["seconds"],
                peak_pss_mb=mb(result["peak_pss"]), peak_rss_one_process_mb=mb(result["peak_rss_one_process"]),
                tokens_per_s=sorted(rates)[len(rates) // 2])
    assert len(rates) == 20
    check_figures(info)
    benchmark.extra_info.update(info)


# ----------------------------------------------------------------------------- many small files, one long line


@pytest.fixture(scope="module")
def small_files(request, tmp_path_factory) -> str:
    """--bench-small-files files of about 1 KB each, 1000 to a folder, and a vocabulary trained on them."""
    n = request.config.getoption("bench_small_files", 2000)
    root = tmp_path_factory.mktemp("small-files")
    sentences, rng = source_sentences(small=True), random.Random(0)
    for i in range(n):
        folder = root / f"{i // 1000:03d}"
        folder.mkdir(exist_ok=True)
        text = ""
        while len(text) < 1000:
            text += rng.choice(sentences) + "\n"
        (folder / f"{i:06d}.txt").write_text(text)
    return str(root)


@pytest.fixture(scope="module")
def long_line(request, tmp_path_factory) -> str:
    """One JSONL document of --bench-long-line-mb MB, on a single line."""
    target = int(request.config.getoption("bench_long_line_mb", 2) * 1e6)
    sentences, rng = source_sentences(small=True), random.Random(0)
    parts, size = [], 0
    while size < target:
        parts.append(rng.choice(sentences))
        size += len(parts[-1]) + 1
    path = tmp_path_factory.mktemp("long-line") / "one.jsonl"
    path.write_text(json.dumps({"text": " ".join(parts)}) + "\n")
    return str(path)


def prepared(result: dict) -> tuple[float, float]:
    """(MB, seconds) of prepare_data.py's 'prepared' line."""
    line = next(text for _, text in result["lines"] if text.startswith("prepared "))
    size, seconds = re.search(r"([\d,.]+) MB in ([\d.]+)s", line).groups()
    return float(size.replace(",", "")), float(seconds)


@pytest.mark.parametrize("workers", [1, 2])
def test_prepare_many_small_files(benchmark, small_files, workers, tmp_path_factory):
    from token_cache import corpus_vocab
    vocab = corpus_vocab([small_files], 8192, str(tmp_path_factory.getbasetemp() / "small-files-vocab"))
    cmd = [sys.executable, "prepare_data.py", "--data", small_files, "--vocab", vocab,
           "--cache-dir", str(tmp_path_factory.mktemp("cache")), "--workers", str(workers)]
    benchmark.group = "corpus"
    result = benchmark.pedantic(lambda: watch(cmd, cwd=ROOT), rounds=1, iterations=1)
    assert result["returncode"] == 0, result["lines"][-5:]
    size, seconds = prepared(result)
    info = dict(what="prepare small files", files=sum(len(f) for _, _, f in os.walk(small_files)), workers=workers,
                seconds=seconds, mb_per_s=size / max(seconds, 1e-3), mb_per_s_per_worker=size / max(seconds, 1e-3) / workers,
                peak_pss_mb=mb(result["peak_pss"]))
    check_figures(info)
    benchmark.extra_info.update(info)


def test_prepare_one_long_line(benchmark, long_line, small_files, tmp_path_factory):
    from token_cache import corpus_vocab
    vocab = corpus_vocab([small_files], 8192, str(tmp_path_factory.getbasetemp() / "small-files-vocab"))
    cmd = [sys.executable, "prepare_data.py", "--data", long_line, "--vocab", vocab,
           "--cache-dir", str(tmp_path_factory.mktemp("cache")), "--workers", "2"]
    benchmark.group = "corpus"
    result = benchmark.pedantic(lambda: watch(cmd, cwd=ROOT), rounds=1, iterations=1)
    assert result["returncode"] == 0, result["lines"][-5:]
    size, seconds = prepared(result)
    info = dict(what="prepare one long line", line_mb=size, seconds=seconds, mb_per_s=size / max(seconds, 1e-3),
                peak_pss_mb=mb(result["peak_pss"]), peak_per_mb_of_line=mb(result["peak_pss"]) / size)
    check_figures(info)
    benchmark.extra_info.update(info)
