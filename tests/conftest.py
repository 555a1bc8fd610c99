"""Fixtures shared by the test files: the scripts importable from tests/, a small real corpus, and
train_mlm.main called in-process with small settings."""

import os
import sys

import pytest

# The scripts live at the top level (no package): make them importable from tests/.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import train_mlm  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """40 documents of real prose: one file per CPython documentation topic."""
    from pydoc_data.topics import topics
    folder = tmp_path_factory.mktemp("corpus")
    for i, (name, text) in enumerate(sorted(topics.items())[:40]):
        (folder / f"{i:02d}-{name}.txt").write_text(text)
    return folder


@pytest.fixture
def run(corpus, tmp_path):
    """Call train_mlm.main (or `main`, a script that wraps it) in-process with small settings; returns (exit
    code, run dir)."""
    cache = corpus.parent / "cache"  # shared by the tests: the vocabulary and token ids are built once

    def go(*extra, name="run", main=train_mlm.main):
        argv = ["--data", str(corpus), "--config", "tiny", "--hidden", "32", "--heads", "2", "--seq-len", "32",
                "--batch-size", "4", "--vocab-size", "300", "--max-predictions", "5", "--eval-batches", "2",
                "--cache-dir", str(cache), "--out-dir", str(tmp_path / "runs"), "--run-name", name,
                "--no-progress", "--log-interval", "1", *extra]
        return main(argv), tmp_path / "runs" / name
    return go
