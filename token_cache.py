"""
The prepared corpus: token ids tokenised in parallel worker processes, written once into a
memory-mapped cache keyed by the corpus files' manifest, and opened in seconds by every later run and
every rank. (Megatron-LM's preprocess_data.py + indexed dataset, with the preparation built in.)

A cache folder, cache_dir/corpus-<key>/, holds
    tokens.bin            every token id, flat (uint16 when the vocabulary fits, else int32)
    sentence_offsets.bin  int64, n_sentences + 1: sentence j is tokens[so[j]:so[j + 1]]
    doc_offsets.bin       int64, n_documents + 1, in sentences
    doc_token_offsets.bin int64, n_documents + 1, in tokens (a split's size without reading the rest)
    token_counts.npy      how often each id occurs (the unigram baseline, without reading tokens.bin)
    meta.json             the manifest it was made from, the counts, the time it took
The key is the files' paths, sizes, modification and change times and inodes, the vocabulary and the
casing: nothing is
read to find a cache, and a file changed since is prepared again. A folder is written under a
temporary name and renamed when complete, so a crash, Ctrl-C or full disk leaves nothing a later run
would trust.
"""

from __future__ import annotations

import array
import contextlib
import hashlib
import itertools
import json
import math
import mmap
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Iterable, Iterator

import numpy as np

from corpus import (CHUNK_BYTES, Chunk, corpus_files, default_corpus_file, default_corpus_path, file_chunks, parse_chunk,
                    sample_sentences)
from progress import Progress
from cli import DataError, Terminated
from files import drop_inherited_locks
from tokenization import BertTokenizer, train_wordpiece_vocab

CACHE_FORMAT = 3  # bump when the layout or the parsing changes, to invalidate caches
VOCAB_FORMAT = 2  # bump when the vocabulary trainer or the sampling changes
_NAMES = ("tokens", "sentence_offsets", "doc_offsets", "doc_token_offsets")


# -----------------------------------------------------------------------------
# The corpus as token ids


class TokenizedCorpus:
    """Documents of sentences as token ids: one flat memory-mapped array plus offsets, sentence_offsets
    (n_sentences+1) and doc_offsets (n_docs+1, in sentence units). A subset (a train or valid split) is
    the same arrays with doc_ids, the indices of its documents: nothing is copied."""

    def __init__(self, tokens: np.ndarray, sentence_offsets: np.ndarray, doc_offsets: np.ndarray,
                 doc_token_offsets: np.ndarray | None = None, from_cache: bool = False,
                 doc_ids: np.ndarray | None = None, info: dict | None = None, token_counts: np.ndarray | None = None):
        self.tokens, self.sentence_offsets, self.doc_offsets = tokens, sentence_offsets, doc_offsets
        if doc_token_offsets is None:
            doc_token_offsets = np.asarray(sentence_offsets)[np.asarray(doc_offsets)]
        self.doc_token_offsets = doc_token_offsets
        self.from_cache = from_cache  # True when opened from the cache without tokenising
        self.doc_ids = doc_ids
        self.info = info or {}
        self.token_counts = token_counts
        self.folder = self.info.get("folder")  # the cache folder it was opened from
        self._fds = _Descriptors()  # name -> file descriptor, for _read; shared with subsets

    def num_documents(self) -> int:
        return len(self.doc_offsets) - 1 if self.doc_ids is None else len(self.doc_ids)

    def num_tokens(self) -> int:
        if self.doc_ids is None:
            return len(self.tokens)
        offsets = np.asarray(self.doc_token_offsets)
        return int((offsets[self.doc_ids.astype(np.int64) + 1] - offsets[self.doc_ids]).sum())

    def __len__(self) -> int:  # a sequence of documents, as create_instances_from_document indexes them
        return self.num_documents()

    def __getitem__(self, i: int) -> list[np.ndarray]:
        return self.document(i)

    def document(self, i: int) -> list[np.ndarray]:
        """The i-th document (of this subset) as a list of sentences (token id arrays)."""
        d = int(self.doc_ids[i]) if self.doc_ids is not None else i
        s0, s1 = int(self.doc_offsets[d]), int(self.doc_offsets[d + 1])
        so = self._read("sentence_offsets", s0, s1 + 1)
        tokens = self._read("tokens", int(so[0]), int(so[-1]))
        so = so - so[0]
        return [tokens[so[j]:so[j + 1]] for j in range(len(so) - 1)]

    def _read(self, name: str, start: int, stop: int) -> np.ndarray:
        """array[start:stop] of a cache file, read with pread when the corpus was opened from the cache.
        Training reads documents at random all over the corpus: through the memory map, every page it
        touches (and the kernel maps 16 around each) would stay resident, so a process's memory would
        grow with the corpus. Read calls leave the pages in the page cache, counted nowhere."""
        array = getattr(self, name)
        fd = self._fds.get(name)
        if fd is None:
            return np.asarray(array[start:stop])
        size = array.dtype.itemsize
        return np.frombuffer(os.pread(fd, (stop - start) * size, start * size), dtype=array.dtype)

    def close(self) -> None:
        """Close the files read by document() (also done when the corpus and its subsets are gone)."""
        self._fds.close()

    def subset(self, doc_ids: np.ndarray) -> "TokenizedCorpus":
        ids = np.asarray(doc_ids)
        if self.doc_ids is not None:
            ids = self.doc_ids[ids]
        subset = TokenizedCorpus(self.tokens, self.sentence_offsets, self.doc_offsets, self.doc_token_offsets,
                                 self.from_cache, ids, self.info, self.token_counts)
        subset._fds = self._fds
        return subset


class _Descriptors(dict):
    """Open file descriptors, closed when the last corpus (or subset) holding them is gone."""

    def close(self) -> None:
        for fd in self.values():
            os.close(fd)
        self.clear()

    def __del__(self):
        self.close()


def open_prepared(folder: str) -> TokenizedCorpus:
    """A cache folder made by prepare_corpus or tokenize_corpus, memory-mapped. DataError when a file
    is missing or has the wrong size (a damaged cache): delete the folder to prepare it again."""
    try:
        with open(os.path.join(folder, "meta.json"), encoding="utf-8") as f:
            meta = json.load(f)
        counts = np.load(os.path.join(folder, "token_counts.npy"))
    except (OSError, ValueError) as e:
        raise DataError(f"{folder}: damaged prepared corpus ({e}); delete the folder to prepare it again") from None
    dtypes = {"tokens": np.dtype(meta["dtype"]), "sentence_offsets": np.int64, "doc_offsets": np.int64,
              "doc_token_offsets": np.int64}
    lengths = {"tokens": meta["tokens"], "sentence_offsets": meta["sentences"] + 1,
               "doc_offsets": meta["documents"] + 1, "doc_token_offsets": meta["documents"] + 1}
    arrays = []
    for name in _NAMES:
        path = os.path.join(folder, name + ".bin")
        size = lengths[name] * np.dtype(dtypes[name]).itemsize
        if not os.path.isfile(path) or os.path.getsize(path) != size:
            raise DataError(f"{path}: damaged prepared corpus (expected {size:,} bytes); delete {folder} to "
                            "prepare it again")
        arrays.append(_memmap(path, dtypes[name], lengths[name]) if size else np.zeros(0, dtypes[name]))
    corpus = TokenizedCorpus(*arrays, from_cache=True, info=dict(meta, folder=folder), token_counts=counts)
    for name in ("tokens", "sentence_offsets"):
        if len(getattr(corpus, name)):
            corpus._fds[name] = os.open(os.path.join(folder, name + ".bin"), os.O_RDONLY)
    return corpus


def _memmap(path: str, dtype, length: int) -> np.memmap:
    array = np.memmap(path, dtype=dtype, mode="r", shape=(length,))
    if hasattr(mmap, "MADV_RANDOM"):  # random reads: no read-ahead of the pages around each one
        array._mmap.madvise(mmap.MADV_RANDOM)
    return array


class _CacheWriter:
    """Appends tokenised documents to a new cache folder under a temporary name; commit() renames it
    into place, abort() removes it."""

    def __init__(self, cache_dir: str, vocab_size: int):
        os.makedirs(cache_dir, exist_ok=True)
        _remove_abandoned(cache_dir)
        self.tmp = tempfile.mkdtemp(dir=cache_dir, prefix=f".tmp-corpus-{os.getpid()}@{socket.gethostname()}-")
        self.dtype = np.dtype(np.uint16 if vocab_size <= 65535 else np.int32)
        self.files = {n: open(os.path.join(self.tmp, n + ".bin"), "wb") for n in _NAMES}
        for name in _NAMES[1:]:
            self.files[name].write(np.zeros(1, np.int64).tobytes())
        self.tokens = self.sentences = self.documents = self.words = 0
        self.token_counts = np.zeros(vocab_size, np.int64)

    def add(self, tokens: np.ndarray, sentence_lengths: np.ndarray, document_sizes: np.ndarray,
            words: int = 0) -> None:
        """tokens of whole documents; the length of each sentence; the number of sentences of each document."""
        self.files["tokens"].write(np.asarray(tokens, self.dtype).tobytes())
        self.files["sentence_offsets"].write((self.tokens + np.cumsum(sentence_lengths, dtype=np.int64)).tobytes())
        self.files["doc_offsets"].write((self.sentences + np.cumsum(document_sizes, dtype=np.int64)).tobytes())
        sentence_ends = np.cumsum(sentence_lengths, dtype=np.int64)
        document_ends = sentence_ends[np.cumsum(document_sizes, dtype=np.int64) - 1] if len(document_sizes) else sentence_ends[:0]
        self.files["doc_token_offsets"].write((self.tokens + document_ends).tobytes())
        self.token_counts += np.bincount(tokens, minlength=len(self.token_counts))[:len(self.token_counts)]
        self.tokens += len(tokens)
        self.sentences += len(sentence_lengths)
        self.documents += len(document_sizes)
        self.words += words

    def commit(self, folder: str, meta: dict) -> None:
        for f in self.files.values():
            f.flush()
            os.fsync(f.fileno())
            f.close()
        np.save(os.path.join(self.tmp, "token_counts.npy"), self.token_counts)
        meta = dict(meta, dtype=self.dtype.name, tokens=self.tokens, sentences=self.sentences,
                    documents=self.documents, words=self.words)
        with open(os.path.join(self.tmp, "meta.json"), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=1)
        try:
            os.replace(self.tmp, folder)  # atomic: readers see the whole folder or none of it
        except OSError:  # another process finished the same corpus first: keep its folder
            shutil.rmtree(self.tmp, ignore_errors=True)

    def abort(self) -> None:
        for f in self.files.values():
            try:
                f.close()
            except OSError:
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)


def _remove_abandoned(cache_dir: str) -> None:
    """Temporary folders of preparations whose process is gone (killed): never trusted, only removed.
    Only this machine's: a process of another machine sharing the cache folder cannot be checked."""
    host = socket.gethostname()
    for name in os.listdir(cache_dir):
        if name.startswith(".tmp-corpus-") and "@" in name:
            pid, _, rest = name.removeprefix(".tmp-corpus-").partition("@")
            if rest.rsplit("-", 1)[0] == host and pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(os.path.join(cache_dir, name), ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -----------------------------------------------------------------------------
# Preparation: stream the files, tokenise chunks in worker processes, append in order


LONG_SENTENCE = 1000  # characters: text the splitter could not cut into sentences


def _tokenize_documents(documents: Iterable[list[str]], tokenizer: BertTokenizer) -> tuple:
    """(tokens, sentence lengths, sentences per document, words, characters, characters in sentences
    longer than LONG_SENTENCE) of documents of sentences; sentences that tokenise to nothing and
    documents left empty are dropped."""
    dtype = np.uint16 if len(tokenizer) <= 65535 else np.int32
    tokens = array.array("H" if dtype == np.uint16 else "i")  # 2 or 4 bytes a token, not a Python int's 36
    sentence_lengths, document_sizes, words, chars, long_chars = [], [], 0, 0, 0
    for document in documents:
        n = 0
        for sentence in document:
            chars += len(sentence)
            if len(sentence) > LONG_SENTENCE:
                long_chars += len(sentence)
            ids = tokenizer.tokenize_to_ids(sentence)
            if ids:
                tokens.extend(ids)
                sentence_lengths.append(len(ids))
                words += len(sentence.split())
                n += 1
        if n:
            document_sizes.append(n)
    return (np.frombuffer(tokens, dtype=dtype) if tokens else np.zeros(0, dtype), np.array(sentence_lengths, np.int64),
            np.array(document_sizes, np.int64), words, chars, long_chars)


MAX_FILES_PER_UNIT = 2000  # small files read together by one worker (progress stays fine-grained)
# A chunk this large is one enormous document (a chunk ends only where a document may end): tokenised
# here, as a worker would, without copying it through a pipe twice.
IN_PROCESS_BYTES = 16 * CHUNK_BYTES


def _size(unit: list) -> int:
    return sum(len(item.data) if isinstance(item, Chunk) and isinstance(item.data, bytes) else 0 for item in unit)


def _work_units(entries: list[list], text_field: str, fmt: str | None) -> Iterator[list]:
    """The corpus files (manifest entries) as units of work of about CHUNK_BYTES, in order: each chunk of a
    large file (read here), or a run of consecutive small files (read by the worker): 100,000 files of a
    kilobyte are a hundred units, not 100,000, and their reading is done in parallel too."""
    unit, size = [], 0
    for entry in entries:
        path, nbytes = entry[0], entry[1] * (3 if entry[0].endswith(".gz") else 1)
        if nbytes > CHUNK_BYTES or path.endswith(".parquet") or fmt == "parquet":
            if unit:
                yield unit
                unit, size = [], 0
            yield from ([chunk] for chunk in _checked_chunks(entry, text_field, fmt))
            continue
        unit.append(entry)
        size += nbytes
        if size >= CHUNK_BYTES or len(unit) >= MAX_FILES_PER_UNIT:
            yield unit
            unit, size = [], 0
    if unit:
        yield unit


def _tokenize_unit(unit: list, text_field: str, fmt: str | None, tokenizer: BertTokenizer | None = None) -> tuple:
    """(file bytes read, *_tokenize_documents) of one unit of work (chunks, or small files' manifest entries),
    in a worker process (or with `tokenizer`)."""
    read, documents = 0, []
    for item in unit:
        for chunk in [item] if isinstance(item, Chunk) else _checked_chunks(item, text_field, fmt):
            read += chunk.read
            documents.extend(parse_chunk(chunk))
    return (read, *_tokenize_documents(documents, tokenizer or _worker_tokenizer))


def _tokenize_unit_to_file(unit: list, text_field: str, fmt: str | None, path: str) -> tuple:
    """_tokenize_unit in a worker, the arrays saved to `path`: what goes back through the pipe is a few
    hundred bytes, written at once. A worker killed while it sent a large result would leave the
    executor reading the rest of that message forever."""
    read, tokens, sentence_lengths, document_sizes, *counts = _tokenize_unit(unit, text_field, fmt)
    with open(path, "wb") as f:
        np.savez(f, tokens=tokens, sentence_lengths=sentence_lengths, document_sizes=document_sizes)
    return (read, path, *counts)


def _load_tokenized(read: int, path: str, *counts) -> tuple:
    """A worker's result, as _tokenize_unit returns it; its file removed."""
    with np.load(path) as arrays:
        result = (read, arrays["tokens"], arrays["sentence_lengths"], arrays["document_sizes"], *counts)
    os.remove(path)
    return result


_worker_tokenizer: BertTokenizer | None = None


def _init_worker(vocab_file: str, do_lower_case: bool) -> None:
    global _worker_tokenizer
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's handler, which only notes it
    _die_with_parent()
    drop_inherited_locks()  # a worker outliving a killed parent must not keep its run folder locked
    _worker_tokenizer = BertTokenizer(vocab_file, do_lower_case)


def _die_with_parent() -> None:
    """Linux: SIGTERM this process when its parent dies (killed by the out-of-memory killer, say), instead
    of leaving it waiting for work that never comes."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the request took effect
        os._exit(1)


def _tokenized(units: Iterator[list], tokenizer: BertTokenizer, workers: int, scratch: str, text_field: str,
               fmt: str | None) -> Iterator[tuple]:
    """_tokenize_unit over the units, in order, in `workers` processes with at most 2 units each in flight
    (memory stays bounded however fast the files are read). The workers' results pass through files in
    `scratch` (inside the cache's temporary folder: whatever a killed run leaves there goes with it)."""
    if workers <= 1:
        for unit in units:
            yield _tokenize_unit(unit, text_field, fmt, tokenizer)
        return
    # fork: the workers start at once and share the parent's pages; spawn where there is no fork (macOS).
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                               initargs=(tokenizer.vocab_file, tokenizer.do_lower_case))
    # Ctrl-C and SIGTERM are noted and raised between units: raised inside the executor's own code, they could
    # leave a lock held that the shutdown below then waits for forever.
    signals: list[int] = []
    main_thread = threading.current_thread() is threading.main_thread()
    old = {sig: signal.signal(sig, lambda signum, frame: signals.append(signum))
           for sig in (signal.SIGINT, signal.SIGTERM)} if main_thread else {}

    def stop_if_signalled() -> None:
        if signals:
            raise Terminated if signals[0] == signal.SIGTERM else KeyboardInterrupt
    os.makedirs(scratch, exist_ok=True)
    try:
        pending: deque = deque()
        for i, unit in enumerate(itertools.chain(units, [None])):
            if unit is not None and _size(unit) > IN_PROCESS_BYTES:
                while pending:  # in order: what is in flight first
                    yield _load_tokenized(*pending.popleft().result())
                    stop_if_signalled()
                yield _tokenize_unit(unit, text_field, fmt, tokenizer)
            elif unit is not None:
                pending.append(pool.submit(_tokenize_unit_to_file, unit, text_field, fmt,
                                           os.path.join(scratch, f"{i}.npz")))
            while pending and (len(pending) >= 2 * workers or unit is None):
                result = _load_tokenized(*pending.popleft().result())
                stop_if_signalled()
                yield result
            stop_if_signalled()
    except BrokenProcessPool:  # a worker was killed (the out-of-memory killer, or a signal to the whole group)
        stop_if_signalled()
        raise DataError("a tokenising worker process died (out of memory?); nothing was kept: try fewer "
                        "--workers") from None
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        # The units in flight finish (a second or so); terminating the workers instead can leave the
        # executor's feeder thread blocked on a pipe nobody reads, and the shutdown with it.
        pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(scratch, ignore_errors=True)


def _stat(path: str) -> list:
    try:
        st = os.stat(path)
    except OSError as e:
        raise DataError(f"{path}: {e.strerror}") from None
    # ctime and inode too: a copy that keeps the size and mtime (cp -p, rsync -t) still changes them
    return [os.path.abspath(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def corpus_manifest(paths: Iterable[str], text_field: str = "text", fmt: str | None = None,
                    cache_dir: str | None = None) -> dict:
    """What identifies a corpus without reading it: every file's absolute path, size, modification and
    change times and inode (files under cache_dir are not part of it)."""
    return {"files": [_stat(f) for f in corpus_files(paths, exclude=cache_dir)], "text_field": text_field,
            "format": fmt}


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _vocab_sha(tokenizer: BertTokenizer) -> str:
    with open(tokenizer.vocab_file, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def default_cache_dir() -> str:
    """Where prepared corpora, trained vocabularies and the default corpus are cached."""
    return os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "bert-from-scratch")


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


TOO_FEW_DOCUMENTS = ("a document is a block of lines between blank lines (BERT's format), an article (WikiText), a "
                     "JSONL line or Parquet row, 10 lines of a file with a paragraph per line, or up to 1 MB of other "
                     "prose; give more text, or separate documents with blank lines")


def prepare_corpus(paths: list[str], tokenizer: BertTokenizer, cache_dir: str, workers: int | None = None,
                   text_field: str = "text", fmt: str | None = None, progress: bool = True,
                   min_documents: int = 1) -> TokenizedCorpus:
    """The corpus in files, folders or globs, tokenised with `tokenizer` into cache_dir (once) and
    memory-mapped. `workers` processes tokenise (default: one per CPU); the text streams through in
    chunks and is never held whole. fmt forces a text format ('bert', 'wikitext', 'prose') instead of
    detecting it per file. Progress goes to stderr: a bar on a terminal, a line every 10 s otherwise.
    A corpus of fewer than min_documents documents is an error, and is not cached."""
    manifest = corpus_manifest(paths, text_field, fmt, cache_dir)
    key = _key(CACHE_FORMAT, manifest, _vocab_sha(tokenizer), tokenizer.do_lower_case)
    folder = os.path.join(cache_dir, f"corpus-{key[:20]}")
    if os.path.isfile(os.path.join(folder, "meta.json")):
        return open_prepared(folder)
    total = sum(entry[1] for entry in manifest["files"])
    # No more processes than units of work (a 10 KB corpus is tokenised in-process, not by 64 forks).
    units_estimate = math.ceil(sum(e[1] * (3 if e[0].endswith(".gz") else 1) for e in manifest["files"]) / CHUNK_BYTES)
    workers = max(1, min(workers or default_workers(), units_estimate))
    t0 = time.perf_counter()
    writer = None
    bar = Progress(total, "prepare", unit="B", unit_scale=True, enabled=progress,
                   describe=lambda done, total, s: f"{done / 1e6:,.0f}/{total / 1e6:,.0f} MB "
                   f"({done / max(total, 1):.0%}), {done / 1e6 / max(s, 1e-9):.1f} MB/s, {writer.tokens:,} tokens")
    try:
        writer = _CacheWriter(cache_dir, len(tokenizer))
        units = _work_units(manifest["files"], text_field, fmt)
        chars = long_chars = 0
        # closing: the workers are shut down before an error is handled (the folder they write in is removed)
        with contextlib.closing(_tokenized(units, tokenizer, workers, os.path.join(writer.tmp, "in-flight"),
                                           text_field, fmt)) as results:
            for read, tokens, sentence_lengths, document_sizes, words, n, n_long in results:
                writer.add(tokens, sentence_lengths, document_sizes, words)
                chars, long_chars = chars + n, long_chars + n_long
                bar.update(read, tokens=f"{writer.tokens:,}")
        _check_prepared(", ".join(paths), writer.documents, chars, long_chars, min_documents)
        seconds = time.perf_counter() - t0
        writer.commit(folder, {"format": CACHE_FORMAT, "manifest": manifest, "vocab": tokenizer.vocab_file,
                               "do_lower_case": tokenizer.do_lower_case, "bytes": total, "workers": workers,
                               "seconds": round(seconds, 2)})
    except OSError as e:  # disk full, a file vanished: say so, keep nothing
        if writer:
            writer.abort()
        where = e.filename or cache_dir
        raise DataError(f"{where}: {e.strerror or e} while preparing the corpus; nothing was kept") from None
    except BaseException:  # bad data, Ctrl-C, a worker's error: keep nothing
        if writer:
            writer.abort()
        raise
    finally:
        bar.close()
    corpus = open_prepared(folder)
    corpus.from_cache = False
    meta = corpus.info
    if progress:
        print(f"prepared {meta['documents']:,} documents, {meta['sentences']:,} sentences, {meta['tokens']:,} "
              f"tokens from {len(manifest['files'])} file(s), {total / 1e6:,.1f} MB in {seconds:.1f}s "
              f"({total / 1e6 / max(seconds, 1e-9):.1f} MB/s, {workers} worker(s)): {folder}", file=sys.stderr)
    return corpus


def holds_prepared(cache_dir: str, data: list[str] | None, vocab_text: str, do_lower_case: bool,
                   text_field: str = "text") -> bool:
    """Whether cache_dir holds this corpus already prepared with this vocabulary: a run would only read it,
    and write nothing there."""
    paths, fmt = (data, None) if data else ([default_corpus_path(cache_dir)], "bert")
    try:
        manifest = corpus_manifest(paths, text_field, fmt, cache_dir)
    except DataError:
        return False
    key = _key(CACHE_FORMAT, manifest, hashlib.sha256(vocab_text.encode()).hexdigest(), do_lower_case)
    return os.path.isfile(os.path.join(cache_dir, f"corpus-{key[:20]}", "meta.json"))


def _check_prepared(name: str, documents: int, chars: int, long_chars: int, min_documents: int) -> None:
    """DataError for a prepared corpus no run could use: no sentences, no sentence punctuation, too few
    documents to split."""
    if documents == 0:
        raise DataError(f"{name}: no sentences found")
    if long_chars > 0.5 * chars:
        raise DataError(f"{name}: {long_chars / chars:.0%} of the text is in 'sentences' of over {LONG_SENTENCE:,} "
                        "characters: it has no sentence punctuation (. ! ? 。！？；) to split it at. Give one sentence "
                        "per line (BERT's format) or one paragraph per line")
    if documents < min_documents:
        raise DataError(f"{name}: too few documents ({documents}) for a train/valid split: " + TOO_FEW_DOCUMENTS)


def prepare_pretraining_corpus(data: list[str] | None, cache_dir: str, vocab: str | None = None,
                               vocab_size: int = 8192, do_lower_case: bool = True, vocab_sample: float = 50,
                               text_field: str = "text", workers: int | None = None, progress: bool = True,
                               min_documents: int = 1) -> tuple[str, BertTokenizer, TokenizedCorpus, dict]:
    """(vocab file, tokenizer, corpus, corpus info) for pretraining: the files of `data` (or the embedded
    default corpus), a vocabulary (`vocab`, or one trained on a vocab_sample MB sample) and the prepared
    corpus. The one recipe of train_mlm.py and prepare_data.py: what one prepares, the other finds."""
    if data:
        paths, fmt, info = data, None, {"sources": data}
    else:
        path, info = default_corpus_file(cache_dir)
        paths, fmt = [path], "bert"
    vocab_file = vocab or corpus_vocab(paths, vocab_size, cache_dir, do_lower_case, vocab_sample, text_field, fmt)
    tokenizer = BertTokenizer(vocab_file, do_lower_case=do_lower_case)
    corpus = prepare_corpus(paths, tokenizer, cache_dir, workers, text_field, fmt, progress, min_documents)
    return vocab_file, tokenizer, corpus, info


def add_corpus_flags(g) -> None:
    """The flags that name a corpus and its preparation, declared once: train_mlm.py and prepare_data.py take
    the same, with the same defaults, so that what one prepares the other finds (the cache key is made of
    them)."""
    g.add_argument("--data", nargs="+", metavar="PATH",
                   help="corpus files, folders or glob patterns: text in BERT's format (a sentence per line, "
                        "blank line between documents), plain prose or WikiText; JSONL with a document per "
                        "line; Parquet (needs pyarrow); any of them gzipped (.gz). Prepared once into a "
                        "memory-mapped cache; default: the embedded corpus of Python, numpy and torch "
                        "documentation")
    g.add_argument("--text-field", default="text", help="the JSONL key / Parquet column holding a document's text")
    g.add_argument("--vocab", metavar="FILE", help="an existing vocab.txt (e.g. bert-base-uncased's); "
                   "default: train a WordPiece vocabulary on a sample of the corpus (cached)")
    g.add_argument("--vocab-size", type=int, default=8192, help="size of the vocabulary to train")
    g.add_argument("--vocab-sample", type=float, default=50,
                   help="MB of the corpus, spread over all of it, to train the vocabulary on")
    g.add_argument("--cased", action="store_true", help="keep case and accents (the default lower-cases and strips "
                   "accents)")
    g.add_argument("--workers", type=int, default=default_workers(),
                   help="processes that tokenise the corpus when it is first prepared (default: one per CPU, at "
                        "most one per MB of corpus)")
    g.add_argument("--cache-dir", default=default_cache_dir(),
                   help="where the extracted default corpus, trained vocabularies and token ids are cached")


def _checked_chunks(entry: list, text_field: str, fmt: str | None) -> Iterator[Chunk]:
    """The chunks of the file of a manifest entry; DataError if the file changes while it is read (the
    cache would not match its key)."""
    path = entry[0]
    yield from file_chunks(path, text_field, fmt=fmt)
    if _stat(path) != entry:
        raise DataError(f"{path}: changed while it was being prepared; nothing was kept, run again")


def tokenize_corpus(documents: list[list[str]], tokenizer: BertTokenizer, cache_dir: str) -> TokenizedCorpus:
    """Documents held in memory, tokenised once and cached under cache_dir, keyed by their text, the
    vocabulary and the casing. Sentences that tokenise to nothing and documents left empty are dropped.
    (For files, prepare_corpus streams them instead, keyed without reading them.)"""
    h = hashlib.sha256()
    h.update(_vocab_sha(tokenizer).encode())
    h.update(f"lower={tokenizer.do_lower_case}\n".encode())
    for doc in documents:
        h.update(("\n".join(doc) + "\n\n").encode())
    folder = os.path.join(cache_dir, f"tokens-{h.hexdigest()[:20]}")
    if os.path.isfile(os.path.join(folder, "meta.json")):
        return open_prepared(folder)
    writer = _CacheWriter(cache_dir, len(tokenizer))
    try:
        tokens, sentence_lengths, document_sizes, words, _, _ = _tokenize_documents(documents, tokenizer)
        writer.add(tokens, sentence_lengths, document_sizes, words)
        writer.commit(folder, {"format": CACHE_FORMAT, "vocab": tokenizer.vocab_file,
                               "do_lower_case": tokenizer.do_lower_case})
    except BaseException:
        writer.abort()
        raise
    corpus = open_prepared(folder)
    corpus.from_cache = False
    return corpus


# -----------------------------------------------------------------------------
# Vocabularies, cached


def cached_vocab(texts: Iterable[str], vocab_size: int, cache_dir: str, do_lower_case: bool = True) -> str:
    """A WordPiece vocabulary trained on texts (held in memory), cached under cache_dir by the texts, size
    and casing."""
    texts = list(texts)
    h = hashlib.sha256(f"{VOCAB_FORMAT}|{vocab_size}|{do_lower_case}\n".encode())
    for text in texts:
        h.update(text.encode())
        h.update(b"\n")
    return _train_cached(texts, vocab_size, os.path.join(cache_dir, f"vocab-{h.hexdigest()[:16]}.txt"), do_lower_case)


def corpus_vocab(paths: list[str], vocab_size: int, cache_dir: str, do_lower_case: bool = True,
                 sample_mb: float = 50, text_field: str = "text", fmt: str | None = None) -> str:
    """A WordPiece vocabulary trained on about sample_mb MB of the corpus files, spread over all of them
    (corpus.sample_sentences), in bounded memory; cached by the files' manifest, size, casing and sample."""
    manifest = corpus_manifest(paths, text_field, fmt, cache_dir)
    key = _key(VOCAB_FORMAT, CACHE_FORMAT, manifest, vocab_size, do_lower_case, sample_mb)
    path = os.path.join(cache_dir, f"vocab-{key[:16]}.txt")
    files = [entry[0] for entry in manifest["files"]]  # the folders are walked once
    return _train_cached(sample_sentences(files, int(sample_mb * 1e6), text_field, fmt), vocab_size, path,
                         do_lower_case)


def _train_cached(texts: Iterable[str], vocab_size: int, path: str, do_lower_case: bool) -> str:
    if not os.path.isfile(path):
        t0 = time.time()
        print(f"training a {vocab_size}-token WordPiece vocabulary ...", file=sys.stderr)
        try:
            train_wordpiece_vocab(texts, vocab_size, path, do_lower_case=do_lower_case)  # writes atomically
        except OSError as e:  # a full disk, an unwritable --cache-dir
            raise DataError(f"{e.filename or path}: {e.strerror or e} while writing the vocabulary") from None
        with open(path, encoding="utf-8") as f:
            size = sum(1 for _ in f)
        print(f"vocabulary trained in {time.time() - t0:.1f}s: {path}", file=sys.stderr)
        if size < vocab_size:
            print(f"note: {size:,} tokens, not {vocab_size:,}: the text has no more pieces that occur twice or more "
                  "(more text gives a fuller vocabulary)", file=sys.stderr)
    return path
