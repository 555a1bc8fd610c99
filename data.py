"""
Data for BERT, from scratch: WordPiece tokenizer and vocabulary trainer, corpus readers, the embedded
default corpus, pretraining instances with dynamic masking (as Google's create_pretraining_data.py),
and classification files with dynamic padding.

The tokenizer is a faithful re-implementation of Google's tokenization.py (the same output as
transformers' BertTokenizer); pretraining follows create_pretraining_data.py, with the same names.
Bad input raises DataError, whose message is one line naming the file (and line).
"""

import ast
import csv
import hashlib
import inspect
import io
import json
import os
import random
import re
import sys
import sysconfig
import tempfile
import time
import unicodedata
import importlib.metadata
import importlib.util
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch


class DataError(ValueError):
    """Bad input data. str(e) is ONE line that names the file (and line number where there is one), e.g.
    'data/train.tsv:17: expected 2 columns (sentence, label), got 3'. Scripts catch it, print it and exit 1."""


PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)

# -----------------------------------------------------------------------------
# Tokenizer (Google's tokenization.py: BasicTokenizer + WordpieceTokenizer)


def _is_whitespace(char: str) -> bool:
    return char in " \t\n\r" or unicodedata.category(char) == "Zs"


def _is_control(char: str) -> bool:
    if char in "\t\n\r":  # counted as whitespace, not control
        return False
    return unicodedata.category(char).startswith("C")


def _is_punctuation(char: str) -> bool:
    cp = ord(char)
    # ASCII non-letters/digits like $ ^ ` are not Unicode P* but BERT treats them as punctuation
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def _is_chinese_char(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


class _CharTable(dict):
    """A str.translate table filled on first sight of each character, so translate runs at C speed."""

    def __init__(self, rule):
        super().__init__()
        self.rule = rule

    def __missing__(self, cp):
        self[cp] = value = self.rule(chr(cp))
        return value


def _clean_rule(char: str):
    # BERT's _clean_text and _tokenize_chinese_chars in one character map
    if char in "\x00\ufffd" or _is_control(char):
        return None
    if _is_whitespace(char):
        return " "
    if _is_chinese_char(ord(char)):
        return f" {char} "
    return char


def _punct_rule(char: str):
    return f" {char} " if _is_punctuation(char) else char


_CLEAN = _CharTable(_clean_rule)
_SPLIT_PUNCT = _CharTable(_punct_rule)
_SPECIALS_RE = re.compile("(" + "|".join(re.escape(t) for t in SPECIAL_TOKENS) + ")")


def _strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")


def _whitespace_words(text: str) -> list[str]:
    """Cleaned text split on whitespace (BERT's basic tokenizer up to whitespace_tokenize). Special tokens
    written in the text stay whole words, as transformers does by default."""
    words = []
    for k, chunk in enumerate(_SPECIALS_RE.split(text) if "[" in text else [text]):
        if k % 2:  # a special token
            words.append(chunk)
            continue
        chunk = chunk.translate(_CLEAN)
        if not chunk.isascii():
            chunk = unicodedata.normalize("NFC", chunk)  # as transformers' BasicTokenizer
        words.extend(chunk.split())
    return words


def _split_word(word: str, do_lower_case: bool) -> list[str]:
    """The rest of BERT's basic tokenizer for one word: lower-case and strip accents (uncased), split off
    punctuation."""
    if do_lower_case:
        word = word.lower()
        if not word.isascii():
            word = _strip_accents(word)
    return word.translate(_SPLIT_PUNCT).split()


def _read_text(path: str) -> str:
    """A file's text; DataError when it is missing, not UTF-8 (naming the line) or empty."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    if not text.strip():
        raise DataError(f"{path}: file is empty")
    return text.removeprefix("\ufeff")


class BertTokenizer:
    """WordPiece tokenizer with the exact behaviour of Google's tokenization.py / transformers' BertTokenizer.

    Each whitespace-separated word is cleaned, split and looked up once: words repeat, so a cache of
    word -> ids makes the whole pipeline run at about the speed of a dict lookup per word."""

    max_input_chars_per_word = 100

    def __init__(self, vocab_file: str, do_lower_case: bool = True):
        self.vocab_file = vocab_file
        self.do_lower_case = do_lower_case
        text = _read_text(vocab_file)
        # like transformers' load_vocab: one token per line; a repeated token keeps its last id
        self.ids_to_tokens = [t.rstrip("\r") for t in text.removesuffix("\n").split("\n")]
        self.vocab = {t: i for i, t in enumerate(self.ids_to_tokens)}
        missing = [t for t in SPECIAL_TOKENS if t not in self.vocab]
        if missing:
            raise DataError(f"{vocab_file}: vocabulary lacks the special token(s) {' '.join(missing)}")
        self.pad_token_id, self.unk_token_id, self.cls_token_id, self.sep_token_id, self.mask_token_id = (
            self.vocab[t] for t in SPECIAL_TOKENS)
        self.special_ids = frozenset(self.vocab[t] for t in SPECIAL_TOKENS)
        self.max_piece_chars = max(len(t) for t in self.vocab)  # bounds the longest-match search
        self._cache: dict[str, tuple[int, ...]] = {}

    def __len__(self) -> int:
        return len(self.ids_to_tokens)

    def _wordpiece(self, text: str) -> list[int]:
        """Greedy longest-match-first; the whole word becomes [UNK] if any part cannot be matched."""
        if len(text) > self.max_input_chars_per_word:
            return [self.unk_token_id]
        ids, start, n = [], 0, len(text)
        while start < n:
            end = min(n, start + self.max_piece_chars)
            while start < end:
                piece = text[start:end] if start == 0 else "##" + text[start:end]
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    break
                end -= 1
            else:
                return [self.unk_token_id]
            start = end
        return ids

    def _word_ids(self, word: str) -> tuple[int, ...]:
        """ids of one word of _whitespace_words (cached)."""
        ids = self._cache.get(word)
        if ids is None:
            if word in SPECIAL_TOKENS:
                ids = (self.vocab[word],)
            else:
                ids = tuple(i for piece in _split_word(word, self.do_lower_case) for i in self._wordpiece(piece))
            if len(self._cache) > 1_000_000:  # bound the memory on endless streams of new words
                self._cache.clear()
            self._cache[word] = ids
        return ids

    def tokenize_to_ids(self, text: str) -> list[int]:
        """Text -> token ids (tokenize + convert_tokens_to_ids, fused for speed)."""
        ids = []
        for word in _whitespace_words(text):
            ids.extend(self._word_ids(word))
        return ids

    def tokenize(self, text: str) -> list[str]:
        return self.convert_ids_to_tokens(self.tokenize_to_ids(text))

    def convert_tokens_to_ids(self, tokens: list[str]) -> list[int]:
        return [self.vocab.get(t, self.unk_token_id) for t in tokens]

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [self.ids_to_tokens[i] for i in ids]

    def encode(self, text: str, text_pair: str | None = None, max_length: int = 512) -> dict[str, list[int]]:
        """[CLS] A [SEP] (B [SEP]), truncated to max_length like transformers' 'longest_first'."""
        a = self.tokenize_to_ids(text)
        b = self.tokenize_to_ids(text_pair) if text_pair is not None else None
        n_special = 2 if b is None else 3
        if max_length < n_special:
            raise ValueError(f"max_length={max_length} leaves no room for the special tokens")
        excess = len(a) + len(b or ()) + n_special - max_length
        if excess > 0:
            if b is None:
                a = a[:len(a) - excess]
            else:
                # one token at a time from the end of the longer side, B on ties (as BERT's _truncate_seq_pair
                # and transformers' Python tokenizer; its Rust one trims A first on ties): in closed form
                la, lb = len(a), len(b)
                first = min(abs(la - lb), excess)
                rest = excess - first
                la, lb = (la - first, lb) if la > lb else (la, lb - first)
                la, lb = la - rest // 2, lb - (rest + 1) // 2
                a, b = a[:la], b[:lb]
        input_ids = [self.cls_token_id] + a + [self.sep_token_id]
        token_type_ids = [0] * len(input_ids)
        if b is not None:
            input_ids += b + [self.sep_token_id]
            token_type_ids += [1] * (len(b) + 1)
        return {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": [1] * len(input_ids)}

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        tokens = [self.ids_to_tokens[int(i)] for i in ids
                  if not (skip_special_tokens and int(i) in self.special_ids)]
        return " ".join(tokens).replace(" ##", "")

    def is_subword(self) -> np.ndarray:
        """Boolean array over ids: True for '##' continuation pieces (used by whole-word masking)."""
        return np.array([t.startswith("##") for t in self.ids_to_tokens], dtype=bool)


# -----------------------------------------------------------------------------
# WordPiece vocabulary training


def train_wordpiece_vocab(texts: Iterable[str], vocab_size: int, out_file: str, do_lower_case: bool = True,
                          min_frequency: int = 2) -> list[str]:
    """Learn a WordPiece vocabulary and write it as vocab.txt (one token per line).

    Start from single characters (word-initial ones plain, the others as '##c'; all printable ASCII
    characters are included even if unseen), then repeatedly merge the most frequent adjacent pair seen at
    least min_frequency times, until the vocabulary has vocab_size tokens. The merge criterion is plain
    pair frequency (BPE), as in HF tokenizers' WordPieceTrainer, rather than the WordPiece likelihood
    score count(ab) / (count(a) * count(b)): that score favours pairs of rare symbols, so it spends the
    vocabulary on rare whole words; on the default corpus at 8192 tokens it gave 3.2 tokens per word
    against 1.3 for frequency. Pair counts are updated incrementally, touching only the words that
    contain the merged pair; the best pair is found with one vectorised numpy pass per merge."""
    raw_counts = Counter()
    for text in texts:
        raw_counts.update(_whitespace_words(text))
    word_counts = Counter()
    for raw, count in raw_counts.items():
        if raw not in SPECIAL_TOKENS:
            for word in _split_word(raw, do_lower_case):
                word_counts[word] += count
    # longer words are [UNK] to the tokenizer anyway
    word_counts = {w: c for w, c in word_counts.items() if len(w) <= BertTokenizer.max_input_chars_per_word}
    chars = sorted({c for w in word_counts for c in w} | {chr(i) for i in range(33, 127)})
    if do_lower_case:
        chars = [c for c in chars if not ("A" <= c <= "Z")]
    alphabet = chars + ["##" + c for c in chars]
    vocab = list(SPECIAL_TOKENS) + alphabet
    if vocab_size < len(vocab):
        raise ValueError(f"vocab_size={vocab_size} is smaller than the {len(vocab)} special tokens and characters")
    sym_id = {s: i for i, s in enumerate(vocab)}
    words = [[sym_id[w[0]]] + [sym_id["##" + c] for c in w[1:]] for w in word_counts]
    freqs = list(word_counts.values())

    pair_count = np.zeros(1 << 16, dtype=np.int64)  # pair index -> occurrences in the corpus
    pairs: list[tuple[int, int]] = []  # pair index -> (left symbol, right symbol)
    pair_index: dict[tuple[int, int], int] = {}
    where: list[set[int]] = []  # pair index -> the words that contain it

    def add_word(w: int, sign: int):
        nonlocal pair_count
        syms, f = words[w], freqs[w] * sign
        for pair in zip(syms, syms[1:]):
            p = pair_index.get(pair)
            if p is None:
                p = pair_index[pair] = len(pairs)
                pairs.append(pair)
                where.append(set())
                if p == len(pair_count):
                    pair_count = np.concatenate([pair_count, np.zeros_like(pair_count)])
            pair_count[p] += f
            if sign > 0:
                where[p].add(w)

    for w in range(len(words)):
        add_word(w, +1)
    threshold = max(1, min_frequency)
    while len(vocab) < vocab_size and pairs:
        best = int(np.argmax(pair_count[:len(pairs)]))  # the first of equals: deterministic
        if pair_count[best] < threshold:
            break  # no pair is frequent enough
        a, b = pairs[best]
        token = vocab[a] + vocab[b][2:]  # b is always a '##' piece
        new = sym_id.get(token)  # the same string may come from another split ('ab'+'##c', 'a'+'##bc')
        if new is None:
            new = sym_id[token] = len(vocab)
            vocab.append(token)
        for w in list(where[best]):
            add_word(w, -1)
            syms, merged, i = words[w], [], 0
            while i < len(syms):
                if i + 1 < len(syms) and syms[i] == a and syms[i + 1] == b:
                    merged.append(new)
                    i += 2
                else:
                    merged.append(syms[i])
                    i += 1
            for pair in zip(syms, syms[1:]):  # this word no longer holds its old pairs
                where[pair_index[pair]].discard(w)
            words[w] = merged
            add_word(w, +1)
    _write_atomic(out_file, "".join(t + "\n" for t in vocab))
    return vocab


def _write_atomic(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


# -----------------------------------------------------------------------------
# Corpora: documents of sentences

# abbreviations after which a period does not end a sentence
_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "etc", "cf", "no", "vol", "fig", "figs",
    "eq", "sec", "ch", "pp", "p", "ed", "eds", "approx", "dept", "inc", "ltd", "co", "corp", "jan", "feb",
    "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "gen", "col", "lt", "capt", "rev"}
_BOUNDARY_RE = re.compile(r"[.!?]+[\"'”’)\]]*\s+(?=[\"'“‘(\[]?[A-Z0-9])")
_INITIALS_RE = re.compile(r"(?:[A-Za-z]\.)+")  # e.g. U.S. i.e. J.


def split_sentences(text: str) -> list[str]:
    """Split prose into sentences with a regex: a sentence ends at . ! or ? (plus closing quotes or
    brackets) followed by whitespace and an upper-case letter, digit or opening quote -- unless the
    period ends a known abbreviation (Mr., etc., Fig.) or initials (U.S., e.g., J.). Decimals like 3.14
    have no space after the period so never split."""
    text = " ".join(text.split())
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
    ends = sum(bool(re.search(r"[.!?][\"'”’)\]]*$", l.rstrip())) for l in lines)
    multi = sum(len(split_sentences(l)) > 1 for l in lines)
    return ends >= 0.5 * len(lines) and multi <= 0.1 * len(lines)


def _file_documents(path: str) -> list[list[str]]:
    text = _read_text(path)
    lines = text.splitlines()
    if any(_WIKITEXT_TITLE_RE.fullmatch(l) for l in lines):
        return _wikitext_documents(lines)
    blocks = [b for b in re.split(r"\n\s*\n", text) if b.strip()]
    if _is_sentence_per_line(lines):  # (a): blank lines separate documents
        return [[l.strip() for l in b.splitlines() if l.strip()] for b in blocks]
    # (b) plain prose: blank lines separate paragraphs (lines inside one may be hard-wrapped); the file is
    # one document
    return [[s for b in blocks for s in split_sentences(b)]]


def _txt_files(path: str) -> list[str]:
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise DataError(f"{path}: no such file or folder")
    files = sorted(os.path.join(root, f) for root, _, names in os.walk(path) for f in names if f.endswith(".txt"))
    if not files:
        raise DataError(f"{path}: folder has no .txt files")
    return files


def read_documents(paths: list[str]) -> list[list[str]]:
    """Documents (lists of sentences) from files or folders (all *.txt inside, sorted). Each file may be in
    BERT's pretraining format (a sentence per line, blank line between documents), WikiText (' = Title = '
    lines start documents, section headings are dropped) or plain prose (split with split_sentences)."""
    documents = []
    for path in paths:
        for file in _txt_files(path):
            documents.extend(d for d in _file_documents(file) if d)
    if not documents:
        raise DataError(f"{', '.join(paths)}: no sentences found")
    return documents


def split_documents(documents: list, valid_fraction: float, seed: int) -> tuple[list, list]:
    """(train, valid): a deterministic random valid_fraction of the documents (at least one when
    valid_fraction > 0 and there are two or more), both keeping the original order."""
    if not 0 <= valid_fraction < 1:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    n_valid = min(len(documents) - 1, max(1, round(len(documents) * valid_fraction))) if valid_fraction > 0 else 0
    held_out = set(random.Random(seed).sample(range(len(documents)), max(0, n_valid)))
    train = [d for i, d in enumerate(documents) if i not in held_out]
    valid = [d for i, d in enumerate(documents) if i in held_out]
    return train, valid


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


def default_corpus(cache_dir: str) -> tuple[list[list[str]], dict]:
    """The embedded default corpus: CPython's reference documentation topics (pydoc_data) and the docstrings
    of the standard library, torch and numpy, cleaned down to prose sentences; one document per topic or
    module. Built once (tens of seconds) and cached under cache_dir in BERT's pretraining format."""
    fingerprint = _corpus_fingerprint()
    path = os.path.join(cache_dir, f"default_corpus-{fingerprint}.txt")
    info_path = path[:-4] + ".json"
    if os.path.isfile(path) and os.path.isfile(info_path):
        with open(info_path, encoding="utf-8") as f:
            info = dict(json.load(f), path=path)  # the cache folder may have moved
        with open(path, encoding="utf-8") as f:
            documents = [d.split("\n") for d in f.read().strip("\n").split("\n\n")]
        return documents, info
    t0 = time.time()
    # Said on stderr, as the vocabulary training is: the first run is otherwise silent for tens of seconds.
    print("extracting the default corpus from the installed documentation (once) ...", file=sys.stderr)
    documents, sources = _build_default_corpus()
    _write_atomic(path, "\n\n".join("\n".join(d) for d in documents) + "\n")
    info = {"sources": sources, "documents": len(documents), "sentences": sum(map(len, documents)),
            "words": sum(len(s.split()) for d in documents for s in d), "path": path,
            "fingerprint": fingerprint, "build_seconds": round(time.time() - t0, 1)}
    _write_atomic(info_path, json.dumps(info, indent=1))
    return documents, info


# -----------------------------------------------------------------------------
# Tokenized corpus, cached on disk


class TokenizedCorpus:
    """Documents of sentences as token ids, in one flat memory-mapped array (uint16 when len(vocab) <= 65535,
    else int32) plus offsets: sentence_offsets (n_sentences+1), doc_offsets (n_docs+1, in sentence units)."""

    def __init__(self, tokens: np.ndarray, sentence_offsets: np.ndarray, doc_offsets: np.ndarray,
                 from_cache: bool = False):
        self.tokens, self.sentence_offsets, self.doc_offsets = tokens, sentence_offsets, doc_offsets
        self.from_cache = from_cache  # True when loaded from the cache without tokenising

    def num_documents(self) -> int:
        return len(self.doc_offsets) - 1

    def num_tokens(self) -> int:
        return len(self.tokens)

    def document(self, i: int) -> list[np.ndarray]:
        so = self.sentence_offsets
        return [self.tokens[so[j]:so[j + 1]] for j in range(self.doc_offsets[i], self.doc_offsets[i + 1])]


def tokenize_corpus(documents: list[list[str]], tokenizer: BertTokenizer, cache_dir: str) -> TokenizedCorpus:
    """Tokenise once and cache under cache_dir, keyed by the corpus text, the vocabulary and the casing.
    Sentences that tokenise to nothing and documents left empty are dropped."""
    h = hashlib.sha256()
    with open(tokenizer.vocab_file, "rb") as f:
        h.update(f.read())
    h.update(f"lower={tokenizer.do_lower_case}\n".encode())
    for doc in documents:
        h.update(("\n".join(doc) + "\n\n").encode())
    folder = os.path.join(cache_dir, f"tokens-{h.hexdigest()[:20]}")
    names = ("tokens.npy", "sentence_offsets.npy", "doc_offsets.npy")
    if os.path.isdir(folder):
        return TokenizedCorpus(*(np.load(os.path.join(folder, n), mmap_mode="r") for n in names), from_cache=True)
    tokens, sentence_offsets, doc_offsets = [], [0], [0]
    for doc in documents:
        for sentence in doc:
            ids = tokenizer.tokenize_to_ids(sentence)
            if ids:
                tokens.extend(ids)
                sentence_offsets.append(len(tokens))
        if len(sentence_offsets) - 1 > doc_offsets[-1]:
            doc_offsets.append(len(sentence_offsets) - 1)
    arrays = (np.array(tokens, dtype=np.uint16 if len(tokenizer) <= 65535 else np.int32),
              np.array(sentence_offsets, dtype=np.int64), np.array(doc_offsets, dtype=np.int64))
    os.makedirs(cache_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=cache_dir, prefix=".tmp-tokens-")
    for name, array in zip(names, arrays):
        np.save(os.path.join(tmp, name), array)
    try:
        os.replace(tmp, folder)  # atomic: readers see the whole folder or none of it
    except OSError:  # another process finished first
        for name in names:
            os.remove(os.path.join(tmp, name))
        os.rmdir(tmp)
    return TokenizedCorpus(*(np.load(os.path.join(folder, n), mmap_mode="r") for n in names))


# -----------------------------------------------------------------------------
# Pretraining instances with dynamic masking (Google's create_pretraining_data.py)


def truncate_seq_pair(tokens_a: list, tokens_b: list, max_num_tokens: int, rng: random.Random) -> None:
    """Truncates a pair of sequences to a maximum sequence length, in place: one token at a time from the
    longer one (B on ties), from the front or the back at random (to avoid biases). The trims are counted
    first and applied with one slice each, so a very long sentence costs no quadratic list deletions."""
    front, back = [0, 0], [0, 0]  # tokens to cut from A and from B
    la, lb = len(tokens_a), len(tokens_b)
    while la + lb > max_num_tokens:
        side = 0 if la > lb else 1
        if rng.random() < 0.5:
            front[side] += 1
        else:
            back[side] += 1
        la, lb = (la - 1, lb) if side == 0 else (la, lb - 1)
    tokens_a[:] = tokens_a[front[0]:front[0] + la]
    tokens_b[:] = tokens_b[front[1]:front[1] + lb]


class PretrainingData:
    """An endless stream of masked-LM (+ next sentence prediction) batches.

    An epoch is one pass over the corpus: its instances are built from all documents with an RNG seeded by
    (seed, epoch), as create_instances_from_document does, and shuffled. Masks are drawn when an instance
    goes into a batch, with an RNG seeded by (seed, epoch, instance index): every epoch gets fresh masks
    (dynamic masking) and a batch does not depend on how it is split across ranks. Rank r of world_size
    takes instances [cursor + r*batch_size, cursor + (r+1)*batch_size) of the global batch; the stream runs
    on into the next epoch without dropping anything.

    next_sentence=False gives single segments '[CLS] A [SEP]' filled up to the target length with whole
    sentences of one document (RoBERTa's FULL-SENTENCES, without NSP); next_sentence_labels are then all 0
    and should be ignored."""

    def __init__(self, corpus: TokenizedCorpus, tokenizer: BertTokenizer, max_seq_length: int = 128,
                 max_predictions_per_seq: int = 20, masked_lm_prob: float = 0.15, short_seq_prob: float = 0.1,
                 next_sentence: bool = True, whole_word_masking: bool = False, seed: int = 12345,
                 rank: int = 0, world_size: int = 1):
        if corpus.num_documents() == 0:
            raise ValueError("the corpus has no documents")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        if max_seq_length < 5:
            raise ValueError(f"max_seq_length={max_seq_length} is too short")
        self.max_seq_length, self.max_predictions_per_seq = max_seq_length, max_predictions_per_seq
        self.masked_lm_prob, self.short_seq_prob, self.next_sentence = masked_lm_prob, short_seq_prob, next_sentence
        self.whole_word_masking, self.seed, self.rank, self.world_size = whole_word_masking, seed, rank, world_size
        self.cls_id, self.sep_id, self.pad_id, self.mask_id = (
            tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id, tokenizer.mask_token_id)
        self.not_candidate = np.zeros(len(tokenizer), dtype=bool)  # never masked
        self.not_candidate[[self.cls_id, self.sep_id, self.pad_id]] = True
        self.is_subword = tokenizer.is_subword()
        # random replacements come from the ordinary tokens: not the special tokens nor [unusedN] slots
        self.random_ids = np.array([i for i, t in enumerate(tokenizer.ids_to_tokens)
                                    if i not in tokenizer.special_ids and not re.fullmatch(r"\[unused\d+\]", t)])
        tokens, so = np.asarray(corpus.tokens), corpus.sentence_offsets  # sentences as views, not copies
        self.documents = [[tokens[so[j]:so[j + 1]] for j in range(corpus.doc_offsets[d], corpus.doc_offsets[d + 1])]
                          for d in range(corpus.num_documents())]
        self.epoch, self.cursor = 0, 0
        self._instances_epoch, self._instances = None, None

    # -- instances

    def _epoch_instances(self, epoch: int) -> list[tuple[np.ndarray, int, int]]:
        """(tokens, length of the [CLS] A [SEP] part, is_random_next) for every instance of an epoch."""
        if self._instances_epoch != epoch:
            rng = random.Random(f"{self.seed}/{epoch}")  # str seeds are hashed deterministically
            order = list(range(len(self.documents)))
            rng.shuffle(order)
            instances = []
            for document_index in order:
                instances.extend(self._create_instances_from_document(document_index, rng))
            rng.shuffle(instances)
            if not instances:
                raise ValueError("the corpus gives no pretraining instances")
            self._instances_epoch, self._instances = epoch, instances
        return self._instances

    def _create_instances_from_document(self, document_index: int, rng: random.Random) -> list:
        documents, document = self.documents, self.documents[document_index]
        # [CLS], [SEP], [SEP] (or [CLS], [SEP] for single segments)
        max_num_tokens = self.max_seq_length - (3 if self.next_sentence else 2)
        # We *usually* fill the whole sequence, but *sometimes* (short_seq_prob) use a shorter one to reduce
        # the mismatch with fine-tuning on short inputs. As in the original, this is drawn once per document.
        target_seq_length = max_num_tokens
        if rng.random() < self.short_seq_prob:
            target_seq_length = rng.randint(2, max_num_tokens)
        instances, current_chunk, current_length, i = [], [], 0, 0
        while i < len(document):
            current_chunk.append(document[i])
            current_length += len(document[i])
            if i == len(document) - 1 or current_length >= target_seq_length:
                if not self.next_sentence:
                    tokens_a = np.concatenate(current_chunk).tolist()
                    truncate_seq_pair(tokens_a, [], max_num_tokens, rng)
                    instances.append((np.array([self.cls_id] + tokens_a + [self.sep_id], dtype=np.int32),
                                      len(tokens_a) + 2, 0))
                else:
                    # a_end is how many chunks go into the A (first) sentence
                    a_end = rng.randint(1, len(current_chunk) - 1) if len(current_chunk) >= 2 else 1
                    tokens_a = np.concatenate(current_chunk[:a_end]).tolist()
                    if len(current_chunk) == 1 or rng.random() < 0.5:
                        is_random_next = True
                        target_b_length = target_seq_length - len(tokens_a)
                        # a random document, different from this one when there is another (10 tries, as the
                        # original)
                        for _ in range(10):
                            random_document_index = rng.randint(0, len(documents) - 1)
                            if random_document_index != document_index:
                                break
                        random_document = documents[random_document_index]
                        random_start = rng.randint(0, len(random_document) - 1)
                        segments, length = [], 0
                        for j in range(random_start, len(random_document)):
                            segments.append(random_document[j])
                            length += len(random_document[j])
                            if length >= target_b_length:
                                break
                        tokens_b = np.concatenate(segments).tolist()
                        # we didn't actually use these segments so we "put them back"
                        i -= len(current_chunk) - a_end
                    else:
                        is_random_next = False
                        tokens_b = np.concatenate(current_chunk[a_end:]).tolist()
                    truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
                    tokens = [self.cls_id] + tokens_a + [self.sep_id] + tokens_b + [self.sep_id]
                    instances.append((np.array(tokens, dtype=np.int32), len(tokens_a) + 2, int(is_random_next)))
                current_chunk, current_length = [], 0
            i += 1
        return instances

    # -- masking

    def create_masked_lm_predictions(self, tokens: np.ndarray, rng: np.random.Generator
                                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(masked tokens, masked_lm_positions (ascending), masked_lm_ids) for one instance: 15% of the
        tokens other than [CLS]/[SEP]/[PAD], capped at max_predictions_per_seq; of those 80% become
        [MASK], 10% a random token, 10% stay. With whole-word masking a word (a token and its following
        '##' pieces) is masked all together, never exceeding the number to predict."""
        cand = np.flatnonzero(~self.not_candidate[tokens])
        num_to_predict = min(self.max_predictions_per_seq, max(1, int(round(len(tokens) * self.masked_lm_prob))))
        if not self.whole_word_masking:
            positions = np.sort(rng.permutation(cand)[:num_to_predict])
        else:
            # a group starts at a candidate that is not a '##' piece or that follows a non-candidate
            is_start = ~self.is_subword[tokens[cand]]
            is_start[1:] |= np.diff(cand) != 1
            is_start[:1] = True
            starts = np.flatnonzero(is_start)  # into cand
            lengths = np.diff(np.append(starts, len(cand)))
            order = rng.permutation(len(starts))
            # the original's greedy loop (take a group if it fits, stop when full): every group before the
            # first that overflows is taken, then smaller groups may still fill the rest
            k = int(np.searchsorted(np.cumsum(lengths[order]), num_to_predict, side="right"))
            chosen, count = order[:k].tolist(), int(lengths[order[:k]].sum())
            for g in order[k + 1:].tolist():
                if count >= num_to_predict:
                    break
                if count + lengths[g] <= num_to_predict:
                    chosen.append(g)
                    count += int(lengths[g])
            n = lengths[chosen]
            offsets = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
            positions = np.sort(cand[np.repeat(starts[chosen], n) + offsets])
        labels = tokens[positions]
        out = tokens.copy()
        u = rng.random(len(positions))
        out[positions[u < 0.8]] = self.mask_id
        random_slots = positions[u >= 0.9]
        out[random_slots] = self.random_ids[rng.integers(0, len(self.random_ids), len(random_slots))]
        return out, positions, labels

    # -- batches

    def next_batch(self, batch_size: int) -> dict[str, torch.Tensor]:
        L, P = self.max_seq_length, self.max_predictions_per_seq
        input_ids = np.zeros((batch_size, L), dtype=np.int64)
        input_mask = np.zeros((batch_size, L), dtype=np.int64)
        segment_ids = np.zeros((batch_size, L), dtype=np.int64)
        positions = np.zeros((batch_size, P), dtype=np.int64)
        ids = np.zeros((batch_size, P), dtype=np.int64)
        weights = np.zeros((batch_size, P), dtype=np.float32)
        nsp = np.zeros(batch_size, dtype=np.int64)
        epoch, cursor = self.epoch, self.cursor
        for k in range(batch_size * self.world_size):
            instances = self._epoch_instances(epoch)
            if cursor == len(instances):
                epoch, cursor = epoch + 1, 0
                instances = self._epoch_instances(epoch)
            b = k - self.rank * batch_size
            if 0 <= b < batch_size:
                tokens, len_a, is_random_next = instances[cursor]
                tokens = tokens.astype(np.int64)
                rng = np.random.default_rng([self.seed, epoch, cursor])
                masked, pos, labels = self.create_masked_lm_predictions(tokens, rng)
                n = len(tokens)
                input_ids[b, :n] = masked
                input_mask[b, :n] = 1
                segment_ids[b, len_a:n] = 1
                positions[b, :len(pos)] = pos
                ids[b, :len(pos)] = labels
                weights[b, :len(pos)] = 1.0
                nsp[b] = is_random_next
            cursor += 1
        self.epoch, self.cursor = epoch, cursor
        batch = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(input_mask),
                 "token_type_ids": torch.from_numpy(segment_ids),
                 "masked_lm_positions": torch.from_numpy(positions),
                 "masked_lm_ids": torch.from_numpy(ids), "masked_lm_weights": torch.from_numpy(weights),
                 "next_sentence_labels": torch.from_numpy(nsp)}
        batch["input_mask"], batch["segment_ids"] = batch["attention_mask"], batch["token_type_ids"]
        return batch

    def state_dict(self) -> dict:
        """The position in the stream (global over ranks): enough to continue exactly."""
        return {"epoch": self.epoch, "cursor": self.cursor, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.cursor, self.seed = int(state["epoch"]), int(state["cursor"]), int(state["seed"])
        self._instances_epoch = None


# -----------------------------------------------------------------------------
# Classification data


@dataclass
class ClassificationExample:
    text_a: str
    text_b: str | None
    label: str
    line: int
    path: str = ""


# text columns of the usual GLUE-style files, in order of preference
_KNOWN_TEXT_COLUMNS = [("sentence1", "sentence2"), ("question", "sentence"), ("question1", "question2"),
                       ("premise", "hypothesis"), ("sentence",), ("text",), ("text_a", "text_b"), ("text_a",)]
_ID_COLUMN_RE = re.compile(r"(?i:q?id\d*|idx|index|guid|.*_id|.*_idx|.*_index)|.*[a-z]ID")  # id, qid1, pairID


def _text_columns(path: str, columns: list[str], label_column: str) -> list[str]:
    for known in _KNOWN_TEXT_COLUMNS:
        if all(c in columns for c in known):
            return list(known)
    others = [c for c in columns if c != label_column and not _ID_COLUMN_RE.fullmatch(c)]
    if not 1 <= len(others) <= 2:
        raise DataError(f"{path}: cannot tell which columns hold the text among {', '.join(columns)}; "
                        f"pass text_columns")
    return others


def _rows(path: str, text: str) -> Iterator[tuple[int, dict]]:
    """(line number, row as a dict) of a .tsv, .csv or .jsonl file; the header row is checked here."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: bad JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
            yield n, row
        return
    if ext not in (".tsv", ".csv"):
        raise DataError(f"{path}: unknown format (expected .tsv, .csv or .jsonl)")
    # GLUE's TSV files have no quoting; CSV follows the csv module's dialect
    reader = csv.reader(io.StringIO(text, newline=""), **({"delimiter": "\t", "quoting": csv.QUOTE_NONE}
                                                        if ext == ".tsv" else {}))
    header = next(reader)
    for row in reader:
        if not row:
            continue
        if len(row) != len(header):
            raise DataError(f"{path}:{reader.line_num}: expected {len(header)} columns ({', '.join(header)}), "
                            f"got {len(row)}")
        yield reader.line_num, dict(zip(header, row))


def read_classification_file(path: str, text_columns: list[str] | None = None,
                             label_column: str = "label") -> list[ClassificationExample]:
    """Examples of a .tsv (GLUE style), .csv or .jsonl file with a header (or keys) naming the columns.
    Labels are kept as strings. The text columns (one or two) are found by name when not given."""
    text = _read_text(path)
    examples = []
    for n, row in _rows(path, text):
        if text_columns is None:
            text_columns = _text_columns(path, list(row), label_column)
        for column in [label_column] + list(text_columns):
            if column not in row:
                raise DataError(f"{path}:{n}: no column {column!r} (columns: {', '.join(map(str, row))})")
        label = row[label_column]
        label = "" if label is None else str(label).strip()
        if not label:
            raise DataError(f"{path}:{n}: empty label")
        texts = [str(row[c]) if row[c] is not None else "" for c in text_columns]
        examples.append(ClassificationExample(texts[0], texts[1] if len(texts) > 1 else None, label, n, path))
    if not examples:
        raise DataError(f"{path}: no examples")
    return examples


class LabelMap:
    """Label string <-> id, built from the training examples in sorted order (numeric order when every
    label is an integer)."""

    def __init__(self, labels: list[str]):
        self.labels = list(labels)
        self.ids = {label: i for i, label in enumerate(self.labels)}

    @classmethod
    def from_examples(cls, examples: Iterable[ClassificationExample]) -> "LabelMap":
        labels = {e.label for e in examples}
        numeric = all(re.fullmatch(r"-?\d+", label) for label in labels)
        return cls(sorted(labels, key=int if numeric else None))

    def encode(self, label: str, where: str) -> int:
        if label not in self.ids:
            raise DataError(f"{where}: unknown label {label!r} (known: {', '.join(self.labels)})")
        return self.ids[label]

    def __len__(self) -> int:
        return len(self.labels)

    def save(self, path: str) -> None:
        _write_atomic(path, json.dumps({"labels": self.labels}, indent=1))

    @classmethod
    def load(cls, path: str) -> "LabelMap":
        try:
            return cls(json.loads(_read_text(path))["labels"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise DataError(f"{path}: not a label map ({e})") from None


def encode_classification(examples: list[ClassificationExample], tokenizer: BertTokenizer, label_map: LabelMap,
                          max_length: int = 128) -> list[dict]:
    return [dict(tokenizer.encode(e.text_a, e.text_b, max_length=max_length),
                 label=label_map.encode(e.label, f"{e.path or '<examples>'}:{e.line}")) for e in examples]


def classification_batches(encoded: list[dict], batch_size: int, pad_token_id: int, shuffle: bool, seed: int,
                           bucket_size: int | None = 100) -> Iterator[dict[str, torch.Tensor]]:
    """Batches padded to their longest sequence. With bucket_size, each run of bucket_size*batch_size
    examples is sorted by length before being cut into batches (similar lengths, little padding) and the
    batch order is shuffled; every example appears exactly once."""
    order = list(range(len(encoded)))
    rng = random.Random(seed)
    if shuffle:
        rng.shuffle(order)
    if bucket_size:
        chunk = bucket_size * batch_size
        for s in range(0, len(order), chunk):
            order[s:s + chunk] = sorted(order[s:s + chunk], key=lambda i: len(encoded[i]["input_ids"]))
    batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    if bucket_size and shuffle:
        rng.shuffle(batches)
    for batch in batches:
        length = max(len(encoded[i]["input_ids"]) for i in batch)
        input_ids = np.full((len(batch), length), pad_token_id, dtype=np.int64)
        token_type_ids = np.zeros((len(batch), length), dtype=np.int64)
        attention_mask = np.zeros((len(batch), length), dtype=np.int64)
        for b, i in enumerate(batch):
            n = len(encoded[i]["input_ids"])
            input_ids[b, :n] = encoded[i]["input_ids"]
            token_type_ids[b, :n] = encoded[i]["token_type_ids"]
            attention_mask[b, :n] = 1
        yield {"input_ids": torch.from_numpy(input_ids), "token_type_ids": torch.from_numpy(token_type_ids),
               "attention_mask": torch.from_numpy(attention_mask),
               "labels": torch.tensor([encoded[i]["label"] for i in batch], dtype=torch.int64)}
