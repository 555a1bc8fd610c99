"""The streamed corpus path: file formats (.gz, JSONL, Parquet, globs), chunking, the parallel preparation
into the manifest-keyed memory-mapped cache, its faults (bad bytes and lines, a full disk, Ctrl-C, a
file changed), and prepare_data.py."""

import gzip
import json
import os
import resource
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import corpus
import data
import token_cache
from cli import DataError
from tokenization import BertTokenizer, train_wordpiece_vocab

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = ("the a of cat dog bird tree house river stone light water green small large old new quick slow "
         "runs sits sees finds makes takes gives keeps holds turns moves stays").split()


def sentence(rng) -> str:
    return " ".join(rng.choice(WORDS, rng.integers(4, 14))).capitalize() + "."


def bert_text(n_docs: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    return "".join("\n".join(sentence(rng) for _ in range(rng.integers(2, 9))) + "\n\n" for _ in range(n_docs))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    train_wordpiece_vocab([bert_text(50)], 200, str(path))
    return BertTokenizer(str(path))


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as f:
        f.write(text)
    return str(path)


def token_lists(c):
    return [[s.tolist() for s in c.document(i)] for i in range(c.num_documents())]


def test_gzip_jsonl_and_globs_read_as_their_plain_forms(tmp_path):
    text = bert_text(30)
    plain = corpus.read_documents([write(tmp_path / "a.txt", text)])
    assert corpus.read_documents([write(tmp_path / "gz" / "a.txt.gz", text)]) == plain
    docs_as_text = [" ".join(d) for d in plain]
    jsonl = "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(docs_as_text))
    assert corpus.read_documents([write(tmp_path / "j" / "a.jsonl", jsonl)]) == plain
    assert corpus.read_documents([write(tmp_path / "j" / "b.jsonl.gz", jsonl)]) == plain
    # a JSONL document's lines are paragraphs: a line always ends a sentence
    two = json.dumps({"body": "A heading\nThe first sentence here. And a second one."}) + "\n"
    assert corpus.read_documents([write(tmp_path / "k.jsonl", two)], text_field="body") == [
        ["A heading", "The first sentence here.", "And a second one."]]
    # folders are searched for every corpus format; globs expand, sorted
    assert corpus.corpus_files([str(tmp_path / "j")]) == [str(tmp_path / "j" / "a.jsonl"), str(tmp_path / "j" / "b.jsonl.gz")]
    assert corpus.corpus_files([str(tmp_path / "*" / "*.gz")]) == [str(tmp_path / "gz" / "a.txt.gz"),
                                                                  str(tmp_path / "j" / "b.jsonl.gz")]


def test_parquet_through_pyarrow_or_a_clear_error(tmp_path, monkeypatch):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    path = str(tmp_path / "docs.parquet")
    pq.write_table(pa.table({"id": [1, 2], "content": ["One sentence here. Another one.", "Second doc. Yes."]}), path)
    assert corpus.read_documents([path], text_field="content") == [["One sentence here.", "Another one."],
                                                                   ["Second doc.", "Yes."]]
    with pytest.raises(DataError, match=r"docs.parquet: no column 'text' \(columns: id, content\)"):
        corpus.read_documents([path])
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # as if pyarrow were not installed
    with pytest.raises(DataError, match="docs.parquet: reading Parquet needs pyarrow.*pip install pyarrow"):
        corpus.read_documents([path], text_field="content")


def test_chunks_end_at_documents_and_parse_like_the_whole_file(tmp_path):
    text = bert_text(400)
    path = write(tmp_path / "big.txt", text)
    chunks = list(corpus.file_chunks(path, chunk_bytes=2000))
    assert len(chunks) > 10 and all(c.fmt == "bert" for c in chunks)
    assert b"".join(c.data for c in chunks) == text.encode()
    assert all(c.data.endswith(b"\n\n") for c in chunks[:-1])  # every cut is at a blank line
    assert [c.line for c in chunks] == [1 + text.encode()[:c.offset].count(b"\n") for c in chunks]
    whole = [d for c in corpus.file_chunks(path) for d in corpus.parse_chunk(c) if d]
    assert [d for c in chunks for d in corpus.parse_chunk(c) if d] == whole and len(whole) == 400
    # WikiText chunks start at a title
    wiki = "".join(f" = Title {i} = \n \n Some text here . More text . \n \n = = Part = = \n Last line . \n"
                   for i in range(300))
    chunks = list(corpus.file_chunks(write(tmp_path / "w.txt", wiki), chunk_bytes=1500))
    assert len(chunks) > 5 and all(c.fmt == "wikitext" and c.data.startswith(b" = Title") for c in chunks)
    assert sum(len([d for d in corpus.parse_chunk(c) if d]) for c in chunks) == 300


def test_sample_sentences_is_bounded_and_spread(tmp_path):
    paths = [write(tmp_path / f"{i}.txt", bert_text(300, seed=i)) for i in range(4)]
    size = sum(os.path.getsize(p) for p in paths)
    every = list(corpus.sample_sentences(paths, 10 * size))
    assert every == [s for d in corpus.read_documents(paths) for s in d]
    sample = list(corpus.sample_sentences(paths, size // 4))
    got = sum(len(s) + 1 for s in sample)
    assert 0.1 * size < got < 0.45 * size  # about a quarter (whole chunks of 1 MB: here, whole files)


@pytest.fixture
def files(tmp_path):
    return [write(tmp_path / "corpus" / f"part{i}.txt", bert_text(120, seed=i)) for i in range(3)]


def test_prepare_matches_in_memory_tokenisation_with_any_number_of_workers(files, tokenizer, tmp_path):
    docs = corpus.read_documents(files)
    reference = token_cache.tokenize_corpus(docs, tokenizer, str(tmp_path / "mem"))
    one = token_cache.prepare_corpus(files, tokenizer, str(tmp_path / "c1"), workers=1, progress=False)
    two = token_cache.prepare_corpus(files, tokenizer, str(tmp_path / "c2"), workers=2, progress=False)
    assert not one.from_cache and isinstance(one.tokens, np.memmap) and one.tokens.dtype == np.uint16
    for c in (one, two):
        assert np.array_equal(c.tokens, reference.tokens)
        assert np.array_equal(c.sentence_offsets, reference.sentence_offsets)
        assert np.array_equal(c.doc_offsets, reference.doc_offsets)
        assert np.array_equal(c.token_counts, np.bincount(reference.tokens, minlength=len(tokenizer)))
        assert np.array_equal(c.doc_token_offsets, np.asarray(c.sentence_offsets)[np.asarray(c.doc_offsets)])
        part = c.subset(np.array([3, 100, 359]))
        assert part.num_tokens() == sum(len(s) for i in range(3) for s in part.document(i))
        assert [s.tolist() for s in part.document(1)] == [s.tolist() for s in c.document(100)]
    assert one.info["documents"] == 360 and one.info["words"] == sum(len(s.split()) for d in docs for s in d)


def test_warm_start_reads_no_text_and_a_changed_file_is_prepared_again(files, tokenizer, tmp_path, monkeypatch):
    cache = str(tmp_path / "cache")
    first = token_cache.prepare_corpus(files, tokenizer, cache, workers=1, progress=False)

    def no_reading(*a, **kw):
        raise AssertionError("the text was read again")
    monkeypatch.setattr(token_cache, "file_chunks", no_reading)
    again = token_cache.prepare_corpus([os.path.dirname(files[0])], tokenizer, cache, progress=False)
    assert again.from_cache and again.folder == first.folder
    monkeypatch.undo()
    with open(files[1], "a", encoding="utf-8") as f:  # the corpus changes: a new key, prepared again
        f.write("A brand new sentence arrives.\nAnd another one.\n\n")
    changed = token_cache.prepare_corpus(files, tokenizer, cache, workers=1, progress=False)
    assert not changed.from_cache and changed.folder != first.folder
    assert changed.num_documents() == first.num_documents() + 1
    os.utime(files[0], ns=(0, 0))  # same size, another modification time: not trusted either
    assert not token_cache.prepare_corpus(files, tokenizer, cache, workers=1, progress=False).from_cache
    cased = BertTokenizer(tokenizer.vocab_file, do_lower_case=False)  # another casing: another key
    assert not token_cache.prepare_corpus(files, cased, cache, workers=1, progress=False).from_cache


def test_a_damaged_cache_is_named_not_used(files, tokenizer, tmp_path):
    c = token_cache.prepare_corpus(files, tokenizer, str(tmp_path / "cache"), workers=1, progress=False)
    tokens = os.path.join(c.folder, "tokens.bin")
    with open(tokens, "r+b") as f:
        f.truncate(os.path.getsize(tokens) - 2)
    with pytest.raises(DataError, match=r"tokens.bin: damaged prepared corpus .*delete"):
        token_cache.prepare_corpus(files, tokenizer, str(tmp_path / "cache"), workers=1, progress=False)


def leftovers(cache):
    return [n for n in os.listdir(cache) if n.startswith(("corpus-", ".tmp"))] if os.path.isdir(cache) else []


@pytest.mark.parametrize("workers", [1, 2])
def test_bad_input_deep_in_a_file_names_the_line_and_keeps_nothing(tmp_path, tokenizer, workers):
    cache = str(tmp_path / "cache")
    text = bert_text(3000) * 4  # several chunks: the bad byte is far from the first one
    lines = text.split("\n")
    bad_line = len(lines) - 20
    raw = "\n".join(lines[:bad_line - 1]).encode() + b"\nA bad \xff byte.\n" + "\n".join(lines[bad_line:]).encode()
    path = tmp_path / "bad.txt"
    path.write_bytes(raw)
    assert os.path.getsize(path) > 2 * corpus.CHUNK_BYTES
    with pytest.raises(DataError, match=rf"bad.txt:{bad_line}: not valid UTF-8") as e:
        token_cache.prepare_corpus([str(path)], tokenizer, cache, workers=workers, progress=False)
    assert "\n" not in str(e.value) and leftovers(cache) == []
    rows = [json.dumps({"text": "Fine sentence here."})] * 5
    for bad, message in [("{not json", r"j.jsonl:4: bad JSON"), ('{"title": "x"}', r"j.jsonl:4: no 'text' field \(title\)"),
                         ('{"text": 3}', r"j.jsonl:4: 'text' is a JSON int, not a string"),
                         ("[1, 2]", r"j.jsonl:4: expected a JSON object, got list")]:
        path = write(tmp_path / "j.jsonl", "\n".join(rows[:3] + [bad] + rows[3:]) + "\n")
        with pytest.raises(DataError, match=message):
            token_cache.prepare_corpus([path], tokenizer, cache, workers=workers, progress=False)
        assert leftovers(cache) == []


def test_gbk_text_gets_the_conversion_hint(tmp_path):
    path = tmp_path / "zh.txt"
    path.write_bytes("第一句话。\n第二句话。\n".encode("gb18030"))
    with pytest.raises(DataError, match=r"zh.txt:1: not valid UTF-8 .*iconv -f gb18030 -t utf-8"):
        corpus.read_documents([str(path)])


def test_missing_empty_and_unusable_inputs(tmp_path, tokenizer):
    cache = str(tmp_path / "cache")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.md").write_text("Not a corpus file.\n")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "blank.jsonl.gz").write_bytes(gzip.compress(b"\n  \n"))
    (tmp_path / "broken.txt.gz").write_bytes(gzip.compress(bert_text(20).encode())[:-30])
    cases = [(tmp_path / "nowhere.txt", "nowhere.txt: no such file or folder"),
             (tmp_path / "docs", "docs: folder has no .txt files"),
             (tmp_path / "*.none", r"\*.none: no file matches"),
             (tmp_path / "empty.txt", "empty.txt: file is empty"),
             (tmp_path / "blank.jsonl.gz", "blank.jsonl.gz: file is empty"),
             (tmp_path / "broken.txt.gz", "broken.txt.gz: not a readable gzip file")]
    for path, message in cases:
        with pytest.raises(DataError, match=message):
            token_cache.prepare_corpus([str(path)], tokenizer, cache, workers=1, progress=False)
        assert leftovers(cache) == []


def test_a_file_changed_while_prepared_is_not_cached(files, tokenizer, tmp_path, monkeypatch):
    chunks = token_cache.file_chunks

    def chunks_then_append(path, *a, **kw):
        yield from chunks(path, *a, **kw)
        with open(path, "a", encoding="utf-8") as f:
            f.write("Written during preparation.\n")
    monkeypatch.setattr(token_cache, "file_chunks", chunks_then_append)
    cache = str(tmp_path / "cache")
    with pytest.raises(DataError, match="part0.txt: changed while it was being prepared; nothing was kept"):
        token_cache.prepare_corpus(files, tokenizer, cache, workers=1, progress=False)
    assert leftovers(cache) == []


def prepare_cmd(cache, *data, workers=1, vocab=None):
    return [sys.executable, "prepare_data.py", "--data", *map(str, data), "--cache-dir", str(cache),
            "--workers", str(workers)] + (["--vocab", vocab] if vocab else ["--vocab-size", "200"])


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """About 25 MB: seconds to prepare, so that a signal lands inside the preparation."""
    return write(tmp_path_factory.mktemp("big") / "big.txt", bert_text(2000) * 60)


def test_prepare_data_command_and_train_mlm_finds_its_cache(files, tmp_path):
    cache = tmp_path / "cache"
    r = subprocess.run(prepare_cmd(cache, *files, workers=2), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "corpus: 360 documents" in r.stdout and "prepared 360 documents" in r.stderr
    folder = next(line.split(": ", 1)[1] for line in r.stdout.splitlines() if line.startswith("cache: "))
    hint = next(line for line in r.stdout.splitlines() if line.startswith("train on it: "))
    assert "--vocab-size 200" in hint and str(cache) in hint
    assert os.path.isfile(os.path.join(folder, "meta.json"))
    again = subprocess.run(prepare_cmd(cache, *files), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and f"already prepared: {folder}" in again.stderr
    import train_mlm
    args = train_mlm.parse_args(["--data", *files, "--cache-dir", str(cache), "--vocab-size", "200"])
    _, _, train, valid, info = train_mlm.prepare_data(args, is_main=True)
    assert train.from_cache and info["cache"] == folder
    assert train.num_documents() + valid.num_documents() == 360 and valid.num_documents() == 18
    assert set(train.doc_ids.tolist()).isdisjoint(valid.doc_ids.tolist())


def run_limited(cmd, limit_bytes):
    """cmd with writes beyond limit_bytes failing as on a full disk (RLIMIT_FSIZE: EFBIG)."""
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, preexec_fn=limit)


def test_full_disk_during_preparation_is_one_line_and_leaves_nothing(files, tmp_path):
    cache = tmp_path / "cache"
    subprocess.run(prepare_cmd(cache, files[0]), cwd=ROOT, check=True, capture_output=True, timeout=120)  # the vocab
    big = write(tmp_path / "big.txt", bert_text(4000))
    r = run_limited(prepare_cmd(cache, big), 200_000)
    assert r.returncode == 1, r.stderr
    err = r.stderr.strip().splitlines()
    assert err[-1].startswith("error: ") and "while preparing the corpus; nothing was kept" in err[-1], err
    assert "Traceback" not in r.stderr and leftovers(cache) == [leftovers(cache)[0]]  # only the first corpus


def test_ctrl_c_during_preparation_keeps_nothing(tmp_path, big, tokenizer):
    cache = tmp_path / "cache"
    proc = subprocess.Popen(prepare_cmd(cache, big, workers=2, vocab=tokenizer.vocab_file), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (cache.is_dir() and any(n.startswith(".tmp-corpus-") for n in os.listdir(cache))):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.02)
    time.sleep(0.3)  # well inside the preparation
    assert proc.poll() is None, "the preparation ended before the signal"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted: nothing of this preparation was kept" in err and "Traceback" not in err
    assert leftovers(cache) == []


def test_a_killed_preparation_leaves_nothing_trusted_and_is_cleaned_up(tmp_path, big, files, tokenizer):
    cache = tmp_path / "cache"
    proc = subprocess.Popen(prepare_cmd(cache, big, vocab=tokenizer.vocab_file), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not (cache.is_dir() and any(n.startswith(".tmp-corpus-") for n in os.listdir(cache))):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.02)
    time.sleep(0.3)
    proc.kill()
    proc.wait()
    assert [n for n in leftovers(cache) if n.startswith(".tmp-corpus-")] and \
        not [n for n in leftovers(cache) if n.startswith("corpus-")]  # nothing a run would open
    token_cache.prepare_corpus(files, tokenizer, str(cache), workers=1, progress=False)
    assert not [n for n in os.listdir(cache) if n.startswith(".tmp")]  # the dead process's folder is gone


def test_the_split_holds_out_a_seeded_share_never_all_and_at_most_cap():
    train, valid = data.split_ids(100, 0.1, seed=3)
    assert len(valid) == 10 and sorted([*train, *valid]) == list(range(100)) and train.dtype == "int32"
    assert (valid == data.split_ids(100, 0.1, seed=3)[1]).all() and (valid != data.split_ids(100, 0.1, seed=4)[1]).any()
    assert data.split_ids(1, 0.5, 0)[1].tolist() == [] and data.split_ids(2, 0.9, 0)[1].size == 1  # never all
    assert data.split_ids(100, 0.0, 0)[1].size == 0 and data.split_ids(100, 0.5, 0, cap=7)[1].size == 7


# -----------------------------------------------------------------------------
# Faults found in review


def test_a_worker_killed_mid_preparation_is_an_error_not_a_hang(big, tokenizer, tmp_path):
    """The out-of-memory killer takes a tokenising worker: the preparation stops with one line and keeps
    nothing (multiprocessing.Pool would wait for the lost chunk forever)."""
    import multiprocessing
    import threading
    killed = []

    def kill_a_worker():
        deadline = time.time() + 30
        while not multiprocessing.active_children() and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)  # inside the preparation
        for child in multiprocessing.active_children()[:1]:
            os.kill(child.pid, signal.SIGKILL)
            killed.append(child.pid)
    threading.Thread(target=kill_a_worker, daemon=True).start()
    cache = str(tmp_path / "cache")
    t0 = time.time()
    with pytest.raises(DataError, match="a tokenising worker process died .*nothing was kept"):
        token_cache.prepare_corpus([big], tokenizer, cache, workers=2, progress=False)
    assert killed and time.time() - t0 < 60 and leftovers(cache) == []


def test_only_this_machines_abandoned_folders_are_removed(files, tokenizer, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    other_host = cache / ".tmp-corpus-1@another-machine-abc123"  # pid 1 there may well be preparing
    dead_here = cache / f".tmp-corpus-999999999@{__import__('socket').gethostname()}-abc123"
    other_host.mkdir()
    dead_here.mkdir()
    token_cache.prepare_corpus(files, tokenizer, str(cache), workers=1, progress=False)
    assert other_host.exists() and not dead_here.exists()


def test_a_long_jsonl_record_is_never_cut_and_text_is_cut_at_a_character(tmp_path):
    record = json.dumps({"text": "Ein sehr langer Satz über € und mehr. " * 2000}, ensure_ascii=False)
    path = tmp_path / "long.jsonl"
    path.write_text('{"text": "Short one."}\n' + record + "\n" + '{"text": "Last one."}\n', encoding="utf-8")
    chunks = list(corpus.file_chunks(str(path), chunk_bytes=1000))  # the record is 80x a chunk
    docs = [d for c in chunks for d in corpus.parse_chunk(c)]
    assert len(docs) == 3 and len(docs[1]) == 2000
    euros = tmp_path / "euros.txt"  # one 50 KB line of a 3-byte character: cut, but never inside one
    euros.write_text("A sentence.\n\n" + "€uro " * 10000 + "\n", encoding="utf-8")
    pieces = list(corpus.file_chunks(str(euros), chunk_bytes=1000, fmt="bert"))
    assert len(pieces) > 2 and all(p.data.decode("utf-8") for p in pieces)  # each decodes on its own


def test_hard_wrapped_prose_is_cut_where_a_sentence_ends(tmp_path):
    rng = np.random.default_rng(9)
    words = " ".join(sentence(rng) for _ in range(3000)).split()
    lines = [" ".join(words[i:i + 11]) for i in range(0, len(words), 11)]  # wrapped mid-sentence, no blank line
    path = write(tmp_path / "wrapped.txt", "\n".join(lines) + "\n")
    chunks = list(corpus.file_chunks(path, chunk_bytes=20000))
    assert chunks[0].fmt == "prose" and len(chunks) > 3
    for c in chunks[:-1]:
        assert c.data.decode().rstrip().endswith(".")  # a document never ends mid-sentence
    whole = " ".join(lines)
    assert " ".join(s for c in chunks for d in corpus.parse_chunk(c) for s in d) == whole


def test_a_cache_inside_the_data_folder_is_not_read_as_corpus(files, tmp_path):
    data_dir = os.path.dirname(files[0])
    cache = os.path.join(data_dir, "cache")
    hidden = os.path.join(data_dir, ".git")
    os.makedirs(hidden)
    write(tmp_path / "corpus" / ".git" / "notes.txt", "Not corpus text.\n")
    os.symlink(str(tmp_path / "missing.txt"), os.path.join(data_dir, "dangling.txt"))
    for _ in range(2):
        r = subprocess.run(prepare_cmd(cache, data_dir), cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
    assert "already prepared" in r.stderr and "from 3 file(s)" not in r.stderr  # the second run was warm
    assert "corpus: 360 documents" in r.stdout
    assert corpus.corpus_files([data_dir], exclude=cache) == files


def test_a_copy_with_the_same_size_and_mtime_is_not_taken_for_the_original(files, tokenizer, tmp_path):
    cache = str(tmp_path / "cache")
    first = token_cache.prepare_corpus(files, tokenizer, cache, workers=1, progress=False)
    st = os.stat(files[0])
    text = open(files[0], encoding="utf-8").read()
    with open(files[0], "w", encoding="utf-8") as f:  # other text, same size, then the old mtime back
        f.write(text.replace("cat", "dog"))
    os.utime(files[0], ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.path.getsize(files[0]) == st.st_size
    again = token_cache.prepare_corpus(files, tokenizer, cache, workers=1, progress=False)
    assert not again.from_cache and again.folder != first.folder


def test_inputs_python_cannot_read_are_one_line_too(tmp_path, tokenizer):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    numbers = str(tmp_path / "n.parquet")
    pq.write_table(pa.table({"text": [1, 2]}), numbers)
    with pytest.raises(DataError, match=r"n.parquet: column 'text' holds int64, not text"):
        corpus.read_documents([numbers])
    path = write(tmp_path / "big.jsonl", '{"text": "Fine."}\n{"text": "x", "n": ' + "9" * 5000 + "}\n")
    with pytest.raises(DataError, match=r"big.jsonl:2: unreadable JSON \(ValueError"):
        corpus.read_documents([path])
    blocker = write(tmp_path / "file.txt", "A sentence.\n")
    with pytest.raises(DataError, match="while writing the vocabulary"):
        token_cache.corpus_vocab([blocker], 300, os.path.join(blocker, "cache"))


def test_file_descriptors_are_closed_with_the_corpus(files, tokenizer, tmp_path):
    def open_fds():
        return len(os.listdir("/proc/self/fd"))
    token_cache.prepare_corpus(files, tokenizer, str(tmp_path / "cache"), workers=1, progress=False)
    before = open_fds()
    for _ in range(20):
        c = token_cache.prepare_corpus(files, tokenizer, str(tmp_path / "cache"), progress=False)
        part = c.subset(np.arange(10))
        del c
        assert part.document(3)  # the subset still reads: the files stay open while it lives
        del part
    assert open_fds() <= before + 1


def test_prepare_data_takes_train_mlms_corpus_flags_with_their_defaults():
    """Declared once (token_cache.add_corpus_flags): a default moved in one moves in both, so the cache one
    prepares is the one the other finds."""
    import prepare_data
    import train_mlm
    train = {a.dest: a.default for a in train_mlm.build_parser()._actions}
    prepare = {a.dest: a.default for a in prepare_data.build_parser()._actions if a.dest != "help"}
    assert prepare.items() <= train.items() and len(prepare) == 8
