"""
Token-classification tasks for finetune_ner.py: your files, and the embedded demo task built from the
documentation installed with torch, numpy and Python, whose authors marked up the names of code
(:class:`Tensor`, :func:`cat`, :attr:`shape`, :mod:`torch.nn`, ``None``): each sentence's names are
tagged by the markup they had, CLASS, FUNCTION, ATTRIBUTE, MODULE or CODE. A demo, with honest labels.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import random
import re
import sys
import sysconfig
from dataclasses import dataclass

import corpus
from cli import DataError
from data import split_ids
from files import write_text_atomic
from ner import Sentence, read_tagged, split_words
from tokenization import read_text

ROLE_TYPES = {"class": "CLASS", "exc": "CLASS", "func": "FUNCTION", "meth": "FUNCTION", "attr": "ATTRIBUTE",
              "mod": "MODULE"}
DEMO_SIZES = {"train": 3000, "valid": 500, "test": 500}  # sentences
DEMO_FORMAT = 1  # bump when the building changes, to invalidate caches
_START, _END = "\ue000", "\ue001"  # around a name while its sentence is cut out and cleaned (private-use)
_TYPE_MARK = {t: chr(0xE010 + i) for i, t in enumerate([*sorted(set(ROLE_TYPES.values())), "CODE"])}
_MARK_TYPE = {v: k for k, v in _TYPE_MARK.items()}
# One pass over the markup, the alternatives tried in this order at each place: a role, a literal, then the
# markup that only decorates text (kept as its text, as the default corpus keeps it).
_MARKUP_RE = re.compile(r":(?:py:)?(?P<role>[\w-]+):`~?!?(?P<name>[^`<]*?)\s*(?:<[^>`]*>)?`"
                        r"|``(?P<code>[^`]+)``"
                        r"|`(?P<link>[^`<]*?)\s*<[^>`]*>`_{0,2}"
                        r"|(?P<url><?https?://\S+>?)"
                        r"|`(?P<plain>[^`]*)`_{0,2}"
                        r"|\*\*?(?P<emph>[^*\s][^*]*?)\*\*?"
                        r"|(?P<note>\s*\[(?:\d+|#\w*|\*)\]_?)"
                        r"|\|(?P<subst>\w+)\|")


@dataclass
class TaggingTask:
    name: str
    train: list[Sentence]
    valid: list[Sentence]
    test: list[Sentence]  # empty: no test split, the report is on valid
    info: dict


def load_tagging_task(s) -> TaggingTask:
    """--train/--valid/--test files (--valid-fraction of train when no --valid), or the embedded demo task."""
    if not s.train:
        return demo_task(s.cache_dir)
    train, scheme = read_tagged(s.train, s.scheme, s.tag_column)
    if s.valid:
        valid, _ = read_tagged(s.valid, s.scheme or scheme, s.tag_column)
    else:
        if len(train) < 2:
            raise DataError(f"{s.train}: one sentence is too few to hold out a validation set")
        kept, held = split_ids(len(train), s.valid_fraction, s.seed)
        train, valid = [train[i] for i in kept], [train[i] for i in held]
    test = read_tagged(s.test, s.scheme or scheme, s.tag_column)[0] if s.test else []
    check_types_seen(train, valid, s.valid, s.train)
    check_types_seen(train, test, s.test, s.train)
    name = os.path.splitext(os.path.basename(s.train))[0]
    return TaggingTask(name, train, valid, test, {"task": "files", "train": s.train, "scheme": scheme,
                                                  "valid": s.valid or f"{s.valid_fraction:.0%} of {s.train}",
                                                  "test": s.test})


def check_types_seen(train: list[Sentence], split: list[Sentence], path: str | None, train_path: str) -> None:
    """An entity type that training never shows cannot be predicted: refuse it by file:line, as a class label
    the train split lacks is refused in classification."""
    known = {tag[2:] for sentence in train for tag in sentence.tags if tag != "O"}
    for sentence in split if path else []:
        unseen = sorted({tag[2:] for tag in sentence.tags if tag != "O"} - known)
        if unseen:
            raise DataError(f"{sentence.where}: entity type {unseen[0]} never occurs in {train_path} "
                            f"(its types: {', '.join(sorted(known)) or 'none'})")


# ----------------------------------------------------------------------------- the embedded demo


def demo_task(cache_dir: str) -> TaggingTask:
    """The embedded demo: sentences of torch's, numpy's and the standard library's docstrings with the names
    their authors marked up, split by module file (no test sentence shares a file with training), built once
    (about 20 s) and cached in cache_dir."""
    path = os.path.join(cache_dir, f"ner_demo-{_fingerprint()}.jsonl")
    if not os.path.isfile(path):
        print("building the demo task from the installed documentation (once) ...", file=sys.stderr)
        rows = _build_demo()
        write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    splits: dict[str, list[Sentence]] = {"train": [], "valid": [], "test": []}
    for n, line in enumerate(read_text(path).splitlines(), 1):
        row = json.loads(line)
        splits[row["split"]].append(Sentence(row["tokens"], row["tags"], f"{path}:{n}"))
    info = {"task": "demo", "source": "names of code marked up in torch, numpy and stdlib docstrings",
            "types": [*sorted(set(ROLE_TYPES.values())), "CODE"], "path": path,
            "sentences": {k: len(v) for k, v in splits.items()}}
    return TaggingTask("demo", splits["train"], splits["valid"], splits["test"], info)


def _fingerprint() -> str:
    return hashlib.sha256(f"{DEMO_FORMAT}|{corpus._corpus_fingerprint()}".encode()).hexdigest()[:16]


def _build_demo() -> list[dict]:
    """Tagged sentences of every module file, its split chosen by file (seeded), at most DEMO_SIZES each."""
    files = [f for source in ("stdlib", "torch", "numpy") for f in _source_files(source)]
    random.Random(0).shuffle(files)
    seen: set[str] = set()
    rows, counts = [], {"test": 0, "valid": 0, "train": 0}
    for f in files:
        split = next(s for s in ("test", "valid", "train") if counts[s] < DEMO_SIZES[s] or s == "train")
        if counts["train"] >= DEMO_SIZES["train"] and split == "train":
            break
        for doc in corpus._module_docstrings(f):
            for sentence in tagged_sentences(inspect.cleandoc(doc), seen):
                rows.append({"tokens": sentence.words, "tags": sentence.tags, "split": split, "file": f})
                counts[split] += 1
    return rows


def _source_files(source: str) -> list[str]:
    root = sysconfig.get_paths()["stdlib"] if source == "stdlib" else corpus._package_dir(source)
    return corpus._py_files(root) if root else []


def tagged_sentences(docstring: str, seen: set[str]) -> list[Sentence]:
    """The prose sentences of a docstring that name code, each name tagged by its markup's role (B-/I- over
    its words); sentences seen before (in `seen`) are skipped."""
    out = []
    for paragraph in corpus._prose_paragraphs(docstring):
        for marked in corpus.split_sentences(_mark(paragraph)):
            text, found = _unmark(marked)
            if not found or text in seen or not corpus._looks_like_prose(text):
                continue
            seen.add(text)
            words, offsets = split_words(text)
            tags = ["O"] * len(words)
            for kind, start, end in found:
                inside = [i for i, (a, b) in enumerate(offsets) if a < end and b > start]
                if not inside or offsets[inside[0]][0] != start or offsets[inside[-1]][1] != end:
                    break  # a name that does not end where a word does ("``x``s"): the sentence is left out
                tags[inside[0]] = f"B-{kind}"
                for i in inside[1:]:
                    tags[i] = f"I-{kind}"
            else:
                out.append(Sentence(words, tags, offsets=offsets, text=text))
    return out


def _mark(paragraph: str) -> str:
    """The paragraph with its decorating markup removed and each marked-up name wrapped in private-use marks
    that say its type (they survive sentence splitting)."""
    def replace(m: re.Match) -> str:
        if m.group("role") is not None:
            kind = ROLE_TYPES.get(m.group("role"))
            name = m.group("name").lstrip("~.")
            return f"{_START}{_TYPE_MARK[kind]}{name}{_END}" if kind and name.strip() else name
        if m.group("code") is not None:
            return f"{_START}{_TYPE_MARK['CODE']}{m.group('code')}{_END}" if m.group("code").strip() else ""
        if m.group("url") is not None or m.group("note") is not None:
            return ""
        return next(g for g in (m.group("link"), m.group("plain"), m.group("emph"), m.group("subst")) if g is not None)
    return _MARKUP_RE.sub(replace, paragraph)


def _unmark(marked: str) -> tuple[str, list[tuple[str, int, int]]]:
    """(text, [(type, start, end)]) of a marked sentence; a name cut by the sentence splitter is left untagged."""
    text, found, start, kind = [], [], None, None
    length = 0
    for ch in marked:
        if ch == _START:
            start = length
        elif ch in _MARK_TYPE and start is not None and kind is None:
            kind = _MARK_TYPE[ch]
        elif ch == _END:
            if start is not None and kind is not None and length > start:
                found.append((kind, start, length))
            start = kind = None
        else:
            text.append(ch)
            length += 1
    return "".join(text), found
