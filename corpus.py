"""
Corpus text, streamed: files in BERT's pretraining format, WikiText, plain prose or JSONL (each also
gzipped) and Parquet become documents of sentences; sentence splitting; the embedded default corpus.

Nothing here holds a whole corpus. file_chunks reads a file in chunks of about CHUNK_BYTES, each ending
where a document may end, and parse_chunk turns one chunk into documents: token_cache.py sends chunks
to worker processes, read_documents parses them in-process (for corpora that fit in memory).
"""

import ast
import glob
import gzip
import hashlib
import importlib.metadata
import importlib.util
import inspect
import json
import math
import os
import re
import sys
import sysconfig
import time
import zlib
from dataclasses import dataclass
from typing import Iterable, Iterator

from cli import DataError
from files import write_text_atomic

CHUNK_BYTES = 1 << 20  # text per chunk: a unit of work for a worker process
CORPUS_SUFFIXES = (".txt", ".txt.gz", ".jsonl", ".jsonl.gz", ".parquet")  # what folders are searched for
FORMATS = ("bert", "wikitext", "paragraphs", "prose", "jsonl", "parquet")
PARAGRAPHS_PER_DOCUMENT = 10  # a file with a paragraph per line and no blank lines: its documents

# -----------------------------------------------------------------------------
# Sentences

# abbreviations after which a period does not end a sentence
_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "etc", "cf", "no", "vol", "fig", "figs",
    "eq", "sec", "ch", "pp", "p", "ed", "eds", "approx", "dept", "inc", "ltd", "co", "corp", "jan", "feb",
    "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "gen", "col", "lt", "capt", "rev"}
_BOUNDARY_RE = re.compile(r"[.!?]+[\"'”’)\]]*\s+(?=[\"'“‘(\[]?[A-Z0-9])")
_INITIALS_RE = re.compile(r"(?:[A-Za-z]\.)+")  # e.g. U.S. i.e. J.


# Chinese, Japanese and Korean text, and the full-width forms of ASCII
_CJK = "\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef"
_CLOSERS = "\"'”’)\\]）」』》〉】〕］｝"
# An East Asian sentence ends at 。！？； (full-width), ｡ (half-width), an ellipsis after CJK text, or
# ASCII ! ? next to CJK text, then any closing quotes or brackets; no space or capital need follow.
_CJK_BOUNDARY_RE = re.compile(rf"(?:[。｡！？；]+|(?<=[{_CJK}])[…⋯!?]+|[!?]+(?=[{_CLOSERS}]*\s?[{_CJK}]))[{_CLOSERS}]*")
_WHITESPACE_RE = re.compile(r"\s")  # str.split()'s whitespace: both use Python's isspace
_SENTENCE_END_RE = re.compile(rf"(?:[.!?。｡！？；]|(?<=[{_CJK}])[…⋯])[{_CLOSERS}]*$")
_PUNCTUATION_RE = re.compile("[.!?。｡！？；…⋯]")  # every character at which a sentence can end
_CJK_CHAR_RE = re.compile(f"[{_CJK}]")


def _ends_sentence(line: str) -> bool:
    """_SENTENCE_END_RE.search(line.rstrip()), without a regex search along the whole line."""
    body = line.rstrip().rstrip(_CLOSERS.replace("\\", ""))
    if not body:
        return False
    if body[-1] in "…⋯":  # an ellipsis ends a sentence after CJK text only
        return len(body) > 1 and bool(_CJK_CHAR_RE.match(body[-2]))
    return body[-1] in ".!?。｡！？；"


def split_sentences(text: str) -> list[str]:
    """Split prose into sentences with regexes. Chinese and Japanese: a sentence ends at 。！？； (or
    ｡, an ellipsis after CJK text, or ! ? next to it) plus closing quotes or brackets. Latin script: at
    . ! or ? (plus closing quotes or brackets) followed by whitespace and an upper-case letter, digit or
    opening quote -- unless the period ends a known abbreviation (Mr., etc., Fig.) or initials (U.S.,
    e.g., J.). Decimals like 3.14 have no space after the period so never split. Text without East Asian
    punctuation is split by the Latin rule alone."""
    text = _squeeze_whitespace(text)
    pieces, start = [], 0
    for m in _CJK_BOUNDARY_RE.finditer(text):
        pieces.append(text[start:m.end()])
        start = m.end()
    pieces.append(text[start:])
    return [s for piece in pieces for s in _split_latin(piece.strip())]


def _squeeze_whitespace(text: str, block: int = 1 << 20) -> str:
    """" ".join(text.split()), a block of about 1 MB at a time: one paragraph of 200 MB would otherwise
    make a list of every word in it (ten times the text's memory)."""
    if len(text) <= block:
        return " ".join(text.split())
    parts, start = [], 0
    while start < len(text):
        end = _WHITESPACE_RE.search(text, min(len(text), start + block))  # blocks end between words
        end = end.start() if end else len(text)
        parts.append(" ".join(text[start:end].split()))
        start = end
    return " ".join(p for p in parts if p)


def _split_latin(text: str) -> list[str]:
    sentences, start = [], 0
    for m in _BOUNDARY_RE.finditer(text):
        last_word = text[start:m.start() + 1].rsplit(" ", 1)[-1]
        if text[m.start()] == "." and (last_word[:-1].lower().lstrip("([\"'") in _ABBREVIATIONS
                                       or _INITIALS_RE.fullmatch(last_word.lstrip("([\"'"))):
            continue
        sentences.append(text[start:m.end()].strip())
        start = m.end()
    sentences.append(text[start:].strip())
    return [s for s in sentences if s]


_WIKITEXT_TITLE_RE = re.compile(r" = [^=].* = ")  # ' = Title = '; sections are ' = = Section = = '


def _wikitext_documents(lines: list[str]) -> list[list[str]]:
    documents, doc = [], []
    for line in lines:
        if _WIKITEXT_TITLE_RE.fullmatch(line):
            documents.append(doc)
            doc = []
        elif line.strip() and not line.strip().startswith("= "):
            # undo WikiText's number tokenisation (1 @,@ 000 -> 1,000) and split at ' . ' style boundaries
            line = line.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".")
            doc.extend(s.strip() for s in re.split(r"(?<= [.!?]) (?=\S)", line.strip()))
    documents.append(doc)
    return documents


def _is_sentence_per_line(lines: list[str]) -> bool:
    """BERT's pretraining format has one sentence per line: most lines end like a sentence and
    hardly any holds two."""
    lines = [l for l in lines if l.strip()]
    ends = sum(_ends_sentence(l) for l in lines)
    if ends < 0.5 * len(lines):
        return False
    # Only a line with sentence punctuation before its last character can hold two sentences.
    multi = sum(len(split_sentences(l)) > 1 for l in lines if _PUNCTUATION_RE.search(l.rstrip()[:-1]))
    return multi <= 0.1 * len(lines)


def _is_paragraph_per_line(lines: list[str]) -> bool:
    """A paragraph per line, no blank lines (the common form of Chinese corpora): most lines end like a
    sentence, and hardly any line is blank (hard-wrapped prose ends most lines mid-sentence)."""
    full = [l for l in lines if l.strip()]
    ends = sum(_ends_sentence(l) for l in full)
    return len(full) >= 2 and len(lines) - len(full) <= 0.01 * len(lines) and ends >= 0.5 * len(full)


# -----------------------------------------------------------------------------
# Files and formats


def _walk(folder: str, exclude: str | None) -> list[str]:
    """Corpus files under folder, sorted; hidden files and folders, and the folder `exclude` (a cache
    kept inside the data), are skipped."""
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")
                   and not (exclude and os.path.abspath(os.path.join(root, d)) == os.path.abspath(exclude))]
        found.extend(os.path.join(root, f) for f in names if f.endswith(CORPUS_SUFFIXES) and not f.startswith(".")
                     and os.path.isfile(os.path.join(root, f)))  # not a dangling link
    return sorted(found)


def corpus_files(paths: Iterable[str], exclude: str | None = None) -> list[str]:
    """Files, folders (every corpus file inside, recursively, sorted) and glob patterns -> corpus files.
    A file named directly is read whatever its extension (as text unless .jsonl/.parquet, gzipped if .gz).
    Nothing under the folder `exclude` (the cache folder) is taken from folders or patterns."""
    files = []
    outside = (lambda f: not os.path.abspath(f).startswith(os.path.abspath(exclude) + os.sep)) if exclude else bool
    for path in paths:
        if os.path.isfile(path):
            files.append(path)
        elif os.path.isdir(path):
            found = _walk(path, exclude)
            if not found:
                raise DataError(f"{path}: folder has no .txt files (nor {', '.join(CORPUS_SUFFIXES[1:])})")
            files.extend(found)
        elif glob.has_magic(path):
            found = sorted(f for f in set(_glob(path)) if os.path.isfile(f) and outside(f))
            if not found:
                raise DataError(f"{path}: no file matches this pattern")
            files.extend(found)
        else:
            raise DataError(f"{path}: no such file or folder")
    return _each_file_once(files)


def _glob(pattern: str) -> list[str]:
    """glob.glob(pattern, recursive=True), where ** visits each real folder once: a symbolic link that loops
    (a link to a parent) is followed once, not some 40 levels deep (and two such links, 2^40 times)."""
    parts = pattern.split(os.sep)
    if "**" not in parts:
        return glob.glob(pattern)
    i = parts.index("**")
    head, tail = os.sep.join(parts[:i]), os.sep.join(parts[i + 1:])
    bases = glob.glob(head) if glob.has_magic(head) else [head]
    found, seen = [], set()
    for base in bases:
        for folder, subfolders, names in os.walk(base or os.curdir, followlinks=True):
            try:
                st = os.stat(folder)
            except OSError:
                subfolders[:] = []
                continue
            if (st.st_dev, st.st_ino) in seen:
                subfolders[:] = []  # this real folder is visited already, by another path
                continue
            seen.add((st.st_dev, st.st_ino))
            subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))  # as glob: no hidden ones
            where = folder if base else os.path.relpath(folder)  # as glob names them: ** from here, no "./"
            if tail:
                found.extend(_glob(tail if where == os.curdir else os.path.join(glob.escape(where), tail)))
            else:
                found.extend(n if where == os.curdir else os.path.join(where, n)
                             for n in names if not n.startswith("."))
    return found


_NOTED_LINKS: set[tuple[str, ...]] = set()


def _each_file_once(files: list[str]) -> list[str]:
    """Each real file once (by device and inode), however many paths reach it: links, a file given twice, a
    ** pattern through a symbolic link that loops (which reaches one file some 40 times). The first path is
    kept, and the duplicates said once."""
    seen, unique = set(), []
    for f in files:
        try:
            st = os.stat(f)
        except OSError as e:
            raise DataError(f"{f}: {e.strerror}") from None
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            unique.append(f)
    if len(unique) < len(files) and tuple(files) not in _NOTED_LINKS:
        _NOTED_LINKS.add(tuple(files))
        print(f"note: {len(files) - len(unique)} of the {len(files)} corpus paths lead to a file already listed "
              f"(links, or a file given twice); each of the {len(unique)} files is read once", file=sys.stderr)
    return unique


def detect_format(path: str, head: bytes) -> str:
    """The format of a corpus file from its name and its first bytes: 'jsonl' (.jsonl, .jsonl.gz),
    'parquet', else text: 'wikitext' (' = Title = ' lines), 'bert' (a sentence per line), 'paragraphs' (a
    paragraph per line, no blank lines) or 'prose'."""
    name = path[:-3] if path.endswith(".gz") else path
    if name.endswith(".jsonl"):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    lines = head.decode("utf-8", errors="ignore").splitlines()
    if len(head) >= CHUNK_BYTES:
        lines = lines[:-1]  # the last line may be cut
    if any(_WIKITEXT_TITLE_RE.fullmatch(line) for line in lines):
        return "wikitext"
    if _is_sentence_per_line(lines):
        return "bert"
    return "paragraphs" if _is_paragraph_per_line(lines) else "prose"


@dataclass(frozen=True)
class Chunk:
    """A piece of one corpus file that holds whole documents (Parquet: a batch of rows)."""
    path: str
    line: int  # the number of its first line (row) in the file, from 1
    offset: int  # of its first byte in the (decompressed) file
    fmt: str  # one of FORMATS
    data: bytes | list  # the text's bytes; for Parquet, the rows' texts
    text_field: str = "text"  # JSONL key / Parquet column of the text
    read: int = 0  # bytes of the file on disk read for it (for progress)


_BLANK_LINE_RE = re.compile(rb"\n[ \t\r\f\v]*\n")
_OVERLAP = 65536 + 1024  # bytes before new text that a boundary search looks at again (_last_sentence_line's 64 KB)


def _last_boundary(buf: bytes, fmt: str) -> int:
    """Where buf may be cut so that the next chunk starts a document (0: nowhere yet)."""
    if fmt in ("jsonl", "paragraphs"):
        return buf.rfind(b"\n") + 1
    if fmt == "wikitext":  # before the last title line
        i = len(buf)
        while (i := buf.rfind(b"\n = ", 0, i)) >= 0:
            if buf[i + 4:i + 5] not in (b"=", b""):
                return i + 1
        return 0
    # after a blank line: it ends a document (BERT's format) or a paragraph (prose)
    end = max(buf.rfind(b"\n\n") + 2, buf.rfind(b"\n\r\n") + 3)
    if end < 3:
        last = None
        for last in _BLANK_LINE_RE.finditer(buf):
            pass
        end = last.end() if last else 0
    if end:
        return end
    return _last_sentence_line(buf) if fmt == "prose" else 0


def _last_sentence_line(buf: bytes) -> int:
    """After the last line (in the last 64 KB) that ends a sentence: where hard-wrapped prose without
    blank lines can be cut; else after the last line."""
    end = len(buf)
    while (i := buf.rfind(b"\n", max(0, len(buf) - 65536), end)) > 0:
        line = buf[buf.rfind(b"\n", 0, i) + 1:i].decode("utf-8", errors="ignore").rstrip()
        if _SENTENCE_END_RE.search(line):
            return i + 1
        end = i
    return buf.rfind(b"\n") + 1


def _char_boundary(buf: bytes) -> int:
    """len(buf), or the start of a UTF-8 character that the end of buf cuts in two."""
    for k in range(1, min(4, len(buf)) + 1):
        byte = buf[-k]
        if byte & 0xC0 != 0x80:  # not a continuation byte: ASCII or the lead byte of a character
            length = 1 if byte < 0xC0 else 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(buf) - k if k < length else len(buf)
    return len(buf)


def _open_raw(path: str):
    try:
        return open(path, "rb")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None


def file_chunks(path: str, text_field: str = "text", chunk_bytes: int = CHUNK_BYTES,
                fmt: str | None = None) -> Iterator[Chunk]:
    """A corpus file as chunks of about chunk_bytes, each ending at a document boundary (a blank line in
    BERT's format and prose, a title in WikiText, a line in JSONL). The format is detected from the first
    chunk unless given. DataError for an empty file or a broken .gz."""
    if path.endswith(".parquet") or fmt == "parquet":
        yield from _parquet_chunks(path, text_field)
        return
    raw = _open_raw(path)
    stream = gzip.GzipFile(fileobj=raw, mode="rb") if path.endswith(".gz") else raw
    # buf grows in place; a boundary is looked for only in what no search has seen (plus an overlap, for
    # boundaries across two reads): a document of any length (one JSONL line of 200 MB) is read in linear
    # time, never copied or searched again per block.
    buf, searched, line, offset, read, has_text = bytearray(), 0, 1, 0, 0, False
    with raw, stream:
        while True:
            try:
                block = stream.read(chunk_bytes)
            except (OSError, EOFError, zlib.error) as e:
                raise DataError(f"{path}: not a readable gzip file ({e})") from None
            if offset == 0 and not buf and block.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark
                block, offset = block[3:], 3
            if fmt is None:
                fmt = detect_format(path, block)
            buf += block
            if not block:
                cut = len(buf)
            elif len(buf) < chunk_bytes:
                continue
            else:
                start = max(0, searched - _OVERLAP)
                cut = _last_boundary(bytes(buf[start:]), fmt)
                cut = start + cut if cut else 0
                searched = len(buf)
                if not cut and len(buf) >= 16 * chunk_bytes and fmt != "jsonl":  # a record is never cut
                    cut = buf.rfind(b"\n") + 1 or _char_boundary(buf)
            if cut:
                data = bytes(buf[:cut])
                del buf[:cut]
                searched = len(buf)  # the last boundary was at the cut: none in what is left
                has_text = has_text or bool(data.strip())
                position = raw.tell()
                yield Chunk(path, line, offset, fmt, data, text_field, position - read)
                line, offset, read = line + data.count(b"\n"), offset + len(data), position
            if not block:
                break
    if not has_text:
        raise DataError(f"{path}: file is empty")


def _parquet_chunks(path: str, text_field: str, rows: int = 2000) -> Iterator[Chunk]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading Parquet needs pyarrow, an optional dependency: pip install pyarrow") from None
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow's own errors
        raise DataError(f"{path}: not a readable Parquet file ({e})") from None
    names = pf.schema_arrow.names
    if text_field not in names:
        raise DataError(f"{path}: no column {text_field!r} (columns: {', '.join(names)}); see --text-field")
    import pyarrow as pa
    kind = pf.schema_arrow.field(text_field).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DataError(f"{path}: column {text_field!r} holds {kind}, not text; see --text-field")
    size, total, row = os.path.getsize(path), pf.metadata.num_rows, 1
    if total == 0:
        raise DataError(f"{path}: file is empty")
    for batch in pf.iter_batches(batch_size=rows, columns=[text_field]):
        texts = batch.column(0).to_pylist()
        yield Chunk(path, row, 0, "parquet", texts, text_field, size * len(texts) // total)
        row += len(texts)


def _text_document(text: str) -> list[str]:
    """A document given as one string (JSONL, Parquet): each line is a paragraph, split into sentences."""
    return [s for paragraph in text.split("\n") for s in split_sentences(paragraph)]


def _decode(chunk: Chunk) -> str:
    try:
        return chunk.data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = chunk.line + chunk.data.count(b"\n", 0, e.start)
        hint = ""
        try:
            chunk.data.decode("gb18030")
            hint = "; if it is GBK/GB18030 (Chinese), convert it: iconv -f gb18030 -t utf-8"
        except UnicodeDecodeError:
            pass
        raise DataError(f"{chunk.path}:{line}: not valid UTF-8 ({e.reason} at byte {chunk.offset + e.start})"
                        f"{hint}") from None


def jsonl_rows(path: str, text: str, first_line: int = 1) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of JSONL text; DataError naming path:line for a line
    that is not a JSON object."""
    for n, line in enumerate(text.split("\n"), first_line):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{n}: bad JSON ({e.msg} at column {e.colno})") from None
        except (ValueError, RecursionError) as e:  # valid JSON that Python refuses (huge numbers, deep nesting)
            raise DataError(f"{path}:{n}: unreadable JSON ({type(e).__name__}: {str(e)[:80]})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
        yield n, row


def _jsonl_documents(chunk: Chunk, text: str) -> list[list[str]]:
    documents = []
    for n, row in jsonl_rows(chunk.path, text, chunk.line):
        if chunk.text_field not in row:
            raise DataError(f"{chunk.path}:{n}: no {chunk.text_field!r} field ({', '.join(map(str, row))}); "
                            "see --text-field")
        value = row[chunk.text_field]
        if not isinstance(value, str):
            raise DataError(f"{chunk.path}:{n}: {chunk.text_field!r} is a JSON {type(value).__name__}, not a string")
        documents.append(_text_document(value))
    return documents


def parse_chunk(chunk: Chunk) -> list[list[str]]:
    """A chunk's documents, as lists of sentences (empty ones included: callers drop them).
    BERT's format: a sentence per line, blank lines between documents. WikiText: ' = Title = ' starts a
    document, headings are dropped. A paragraph per line (no blank lines): every PARAGRAPHS_PER_DOCUMENT
    neighbouring paragraphs are a document, so that next-sentence pairs are real neighbours. Plain
    prose: split into sentences; the chunk is one document (a file of up to about CHUNK_BYTES is one
    document; a longer one is cut at blank lines). JSONL and Parquet: a document per row."""
    if chunk.fmt == "parquet":
        return [_text_document(t) for t in chunk.data if t]
    text = _decode(chunk)
    if chunk.fmt == "jsonl":
        return _jsonl_documents(chunk, text)
    if chunk.fmt == "wikitext":
        return _wikitext_documents(text.splitlines())
    if chunk.fmt == "paragraphs":
        return _paragraph_documents(text.splitlines())
    blocks = [b for b in re.split(r"\n\s*\n", text) if b.strip()]
    if chunk.fmt == "bert":
        return [[line.strip() for line in b.splitlines() if line.strip()] for b in blocks]
    return [[s for b in blocks for s in split_sentences(b)]]


def _paragraph_documents(lines: list[str]) -> list[list[str]]:
    documents, doc, n = [], [], 0
    for line in lines:
        if line.strip():
            doc.extend(split_sentences(line))
            n += 1
        if n == PARAGRAPHS_PER_DOCUMENT or (not line.strip() and doc):  # a blank line ends one too
            documents.append(doc)
            doc, n = [], 0
    documents.append(doc)
    return documents


def read_documents(paths: list[str], text_field: str = "text") -> list[list[str]]:
    """Documents (lists of sentences) from files, folders (all corpus files inside, sorted) or globs, in
    memory: for a corpus of any size, token_cache.prepare_corpus streams the same chunks instead. Each
    text file may be in BERT's pretraining format (a sentence per line, blank line between documents),
    WikiText (' = Title = ' lines start documents, section headings are dropped) or plain prose (split
    with split_sentences); .jsonl and .parquet hold a document per row; .gz files are read as what they
    hold."""
    documents = [d for f in corpus_files(paths) for c in file_chunks(f, text_field) for d in parse_chunk(c) if d]
    if not documents:
        raise DataError(f"{', '.join(paths)}: no sentences found")
    return documents


def sample_sentences(files: list[str], max_bytes: int, text_field: str = "text",
                     fmt: str | None = None) -> Iterator[str]:
    """Sentences from about max_bytes of the corpus spread over all of it (every k-th chunk, in file
    order), for training a vocabulary in bounded memory and time. A .gz file counts three times its size."""
    total = sum(os.path.getsize(f) * (3 if f.endswith(".gz") else 1) for f in files)
    every = max(1, math.ceil(total / max_bytes))
    n = 0
    for f in files:
        for chunk in file_chunks(f, text_field, fmt=fmt):
            if n % every == 0:
                for document in parse_chunk(chunk):
                    yield from document
            n += 1


# -----------------------------------------------------------------------------
# The embedded default corpus: real English prose that ships with Python, torch and numpy

_CORPUS_FORMAT = 3  # bump when the cleaning changes, to invalidate caches
_ADMONITIONS = {"note", "warning", "tip", "important", "caution", "hint", "attention", "danger", "seealso"}
_SECTION_RE = re.compile(r"(args|arguments|parameters|params|keyword arguments|kwargs|returns?|yields?|raises|"
                         r"attributes|notes?|warnings?|see also|examples?|references?|todo|shape|methods)\s*:{0,2}",
                         re.I)
_PARAM_HEADER_RE = re.compile(r"\*{0,2}[\w.]+(\s*,\s*\*{0,2}[\w.]+)*\s+: .*")  # numpydoc 'x, y : int'
_GOOGLE_PARAM_RE = re.compile(r"\*{0,2}\w+ \([^)]*\):\s*")  # 'x (int): ' -> keep the description
_FIELD_RE = re.compile(r":(\w+)([^:]*):\s*")  # ':param x: ' -> keep the description
_BULLET_RE = re.compile(r"([-*+•]|\d+[.)]|#\.|\(\w\))\s+")
_SIGNATURE_RE = re.compile(r"[\w.]+\(.*\)(\s*->.*)?")
_UNDERLINE_RE = re.compile(r"([-=~*^#\"'`+_])\1{2,}")
_TABLE_RE = re.compile(r"[+|].*|[=\- ]{3,}")


def _prose_paragraphs(text: str) -> list[str]:
    """reST / numpydoc / Google-style documentation -> paragraphs of prose, without code (literal blocks,
    doctests, directives), headings, tables, parameter headers and signatures."""
    paragraphs, para = [], []
    para_indent, skip_indent, in_doctest = 0, None, False

    def flush():
        if para:
            paragraphs.append(" ".join(para))
            para.clear()

    for line in text.expandtabs().splitlines():
        s = line.strip()
        if not s:
            in_doctest = False
            flush()
            continue
        indent = len(line) - len(line.lstrip())
        if skip_indent is not None:
            if indent > skip_indent:
                continue
            skip_indent = None
        if in_doctest or s.startswith((">>>", "... ", "$ ")) or s == "...":
            in_doctest = True  # the doctest's output lines run to the next blank line
            flush()
            continue
        if para and para[-1].endswith(":") and indent > para_indent:
            skip_indent = para_indent  # an indented block after 'text:' or 'text::' is a literal (code) block
            flush()
            continue
        m = re.match(r"\.\. ([\w:-]+)::\s*(.*)", s)
        if m:  # a directive: keep the text of notes and warnings, drop the others (code, math, ...)
            flush()
            if m.group(1).lower() not in _ADMONITIONS:
                skip_indent = indent
            elif m.group(2):
                para.append(m.group(2))
                para_indent = indent
            continue
        if _UNDERLINE_RE.fullmatch(s):  # a heading's underline: drop the heading too
            if para:
                para.pop()
            flush()
            continue
        if _SECTION_RE.fullmatch(s):  # 'Args:', 'Returns' ...; the code under 'Example:' goes too
            if s.lower().startswith("example") and s.endswith(":"):
                skip_indent = indent
            flush()
            continue
        if _TABLE_RE.fullmatch(s) or _SIGNATURE_RE.fullmatch(s) or _PARAM_HEADER_RE.fullmatch(s) \
                or s.startswith((".. ", ":type ", ":rtype:")):
            flush()
            continue
        m = _BULLET_RE.match(s) or _GOOGLE_PARAM_RE.match(s) or _FIELD_RE.match(s)
        if m:  # a list item or field starts a paragraph of its own
            flush()
            s = s[m.end():]
        if not para:
            para_indent = indent
        para.append(s)
    flush()
    return paragraphs


_MARKUP = [
    (re.compile(r"(?::[\w-]+)+:`~?!?([^`<]*?)\s*(?:<[^>`]*>)?`"), r"\1"),  # :func:`x` and :ref:`text <target>`
    (re.compile(r"`([^`<]*?)\s*<[^>`]*>`_{0,2}"), r"\1"),  # `text <target>`_
    (re.compile(r"<?https?://\S+>?"), ""),  # URLs
    (re.compile(r"``([^`]*)``"), r"\1"),
    (re.compile(r"`([^`]*)`_{0,2}"), r"\1"),
    (re.compile(r"\*\*?([^*\s][^*]*?)\*\*?"), r"\1"),  # *emphasis*, **strong**
    (re.compile(r"\s*\[(\d+|#\w*|\*)\]_?"), ""),  # footnote references
    (re.compile(r"\|(\w+)\|"), r"\1"),  # |substitutions|
]
_PLAIN_WORD_RE = re.compile(r"[\"'(]?[A-Za-z][a-z'-]*[\"'),;:.!?]*")


def _looks_like_prose(sentence: str) -> bool:
    """At least 4 words, mostly plain words and letters, ends like a sentence."""
    words = sentence.split()
    if not 4 <= len(words) <= 120 or not re.search(r"[.!?][\"')]*$", sentence):
        return False
    if re.search(r"[\\{}=<>|]", sentence):  # math, code, markup
        return False
    letters = sum(c.isalpha() for c in sentence)
    plain = sum(bool(_PLAIN_WORD_RE.fullmatch(w)) for w in words)
    return letters >= 0.75 * (len(sentence) - len(words) + 1) and plain >= 0.6 * len(words)


def _prose_sentences(text: str, seen: set[str]) -> list[str]:
    sentences = []
    for para in _prose_paragraphs(text):
        for pattern, repl in _MARKUP:
            para = pattern.sub(repl, para)
        if para in seen:  # the same docstring is often repeated (overloads, re-exports)
            continue
        seen.add(para)
        sentences.extend(s for s in split_sentences(para) if _looks_like_prose(s))
    return sentences


def _module_docstrings(path: str) -> list[str]:
    """All docstrings of a .py file, by parsing it (never importing it: some modules have side effects)."""
    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read())
    except (SyntaxError, ValueError, RecursionError, OSError):
        return []
    docstrings, stack = [], [tree]
    while stack:  # statements only, in file order: expressions hold no docstrings (and most of the nodes)
        node = stack.pop()
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            docstrings.append(ast.get_docstring(node))
        children = [c for field in ("body", "handlers", "orelse", "finalbody") for c in getattr(node, field, ())
                    if isinstance(c, (ast.stmt, ast.excepthandler))]
        stack.extend(reversed(children))
    return [d for d in docstrings if d]


_SKIP_DIRS = {"test", "tests", "testing", "idlelib", "lib2to3", "site-packages", "dist-packages", "__pycache__",
              "turtledemo", "ensurepip", "_vendor", "vendored", "third_party"}


def _py_files(root: str) -> list[str]:
    files = []
    for dirpath, dirnames, names in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        files.extend(os.path.join(dirpath, n) for n in sorted(names) if n.endswith(".py"))
    return files


def _package_dir(name: str) -> str | None:
    spec = importlib.util.find_spec(name)  # finds the package without importing it
    return list(spec.submodule_search_locations)[0] if spec and spec.submodule_search_locations else None


def _build_default_corpus() -> tuple[list[list[str]], dict]:
    from pydoc_data.topics import topics
    seen: set[str] = set()
    documents, sources = [], {}

    def add(source: str, docs: Iterable[list[str]]):
        docs = [d for d in docs if len(d) >= 2]  # next sentence prediction needs two sentences
        documents.extend(docs)
        sources[source] = {"documents": len(docs), "sentences": sum(map(len, docs)),
                           "words": sum(len(s.split()) for d in docs for s in d)}

    add("python_docs", (_prose_sentences(topics[k], seen) for k in sorted(topics)))
    roots = [("stdlib", sysconfig.get_paths()["stdlib"]), ("torch", _package_dir("torch")),
             ("numpy", _package_dir("numpy"))]
    for source, root in roots:
        if root:
            add(source, ([s for doc in _module_docstrings(f) for s in _prose_sentences(inspect.cleandoc(doc), seen)]
                         for f in _py_files(root)))
    return documents, sources


def _corpus_fingerprint() -> str:
    versions = [sys.version, f"format={_CORPUS_FORMAT}"]
    for package in ("torch", "numpy"):
        try:
            versions.append(f"{package}={importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{package}=none")
    return hashlib.sha256("\n".join(versions).encode()).hexdigest()[:16]


def default_corpus_path(cache_dir: str) -> str:
    """Where default_corpus_file keeps the default corpus of this Python, torch and numpy (built or not)."""
    return os.path.join(cache_dir, f"default_corpus-{_corpus_fingerprint()}.txt")


def default_corpus_file(cache_dir: str) -> tuple[str, dict]:
    """The embedded default corpus as a file in BERT's pretraining format, and its info: CPython's reference
    documentation topics (pydoc_data) and the docstrings of the standard library, torch and numpy, cleaned
    down to prose sentences; one document per topic or module. Built once (tens of seconds) and cached
    under cache_dir."""
    path = default_corpus_path(cache_dir)
    fingerprint = os.path.basename(path)[len("default_corpus-"):-len(".txt")]
    info_path = path[:-4] + ".json"
    if os.path.isfile(path) and os.path.isfile(info_path):
        with open(info_path, encoding="utf-8") as f:
            return path, dict(json.load(f), path=path)  # the cache folder may have moved
    t0 = time.time()
    # Said on stderr, as the vocabulary training is: the first run is otherwise silent for tens of seconds.
    print("extracting the default corpus from the installed documentation (once) ...", file=sys.stderr)
    documents, sources = _build_default_corpus()
    info = {"sources": sources, "documents": len(documents), "sentences": sum(map(len, documents)),
            "words": sum(len(s.split()) for d in documents for s in d), "path": path,
            "fingerprint": fingerprint, "build_seconds": round(time.time() - t0, 1)}
    try:
        write_text_atomic(path, "\n\n".join("\n".join(d) for d in documents) + "\n")
        write_text_atomic(info_path, json.dumps(info, indent=1))
    except OSError as e:  # a full disk, an unwritable --cache-dir
        raise DataError(f"{e.filename or path}: {e.strerror or e} while writing the default corpus") from None
    return path, info


def default_corpus(cache_dir: str) -> tuple[list[list[str]], dict]:
    """The embedded default corpus (see default_corpus_file) as documents of sentences, and its info."""
    path, info = default_corpus_file(cache_dir)
    with open(path, encoding="utf-8") as f:
        documents = [d.split("\n") for d in f.read().strip("\n").split("\n\n")]
    return documents, info
