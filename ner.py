"""
Named entities, the data and the measures of token classification: tag schemes and their conversion to
BIO, entity spans as conlleval reads them, the field's entity-level scores, word-piece alignment with
overlapping windows, and decoding that emits only valid BIO sequences.

Sentences are lists of words with a tag each; the model sees word pieces, labelled at each word's first
piece (the others, and [CLS], [SEP] and padding, are left out of the loss). A sentence longer than the
model's window is split into overlapping windows, never truncated; each word's prediction is taken from
the window in which it lies farthest from an edge.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from cli import DataError
from tokenization import BertTokenizer, _split_word, _whitespace_words, read_text

SCHEMES = ("BIO", "IOB1", "BIOES")
IGNORE = -100  # the label of a position left out of the loss (model.BertForTokenClassification.IGNORE)
_TAG_RE = re.compile(r"(?:([BIES])-(.+)|O)")


# ----------------------------------------------------------------------------- tags and entities


@dataclass
class Sentence:
    """Words with a tag each (BIO once read), and where they came from (file:line of the first word)."""
    words: list[str]
    tags: list[str]
    where: str = ""
    offsets: list[tuple[int, int]] = field(default_factory=list)  # each word's characters in `text`, if any
    text: str = ""


def entities(tags: list[str]) -> list[tuple[str, int, int]]:
    """(type, first, last) of each entity in a tag sequence, by conlleval's rules, which read any of BIO, IOB1
    and BIOES, well-formed or not: an entity starts at B- or S-, at an I- or E- after O or after another type,
    and ends before O, B-, S-, another type, or after E- or S-."""
    found, start, prev_tag, prev_type = [], 0, "O", ""
    for i, chunk in enumerate([*tags, "O"]):
        tag, kind = (chunk[0], chunk[2:]) if chunk != "O" else ("O", "")
        if prev_tag in "ES" or prev_tag in "BI" and tag in "BSO" \
                or prev_tag != "O" and prev_type != kind:
            found.append((prev_type, start, i - 1))
        if tag in "BS" or prev_tag in "ES" and tag in "EI" or prev_tag == "O" and tag in "EI" \
                or tag != "O" and prev_type != kind:
            start = i
        prev_tag, prev_type = tag, kind
    return found


def detect_scheme(sentences: list[list[str]]) -> str:
    """BIOES when E- or S- tags occur; IOB1 (CoNLL-2003 as shipped: I- begins an entity, B- only one that
    follows another of its type) when I- begins entities and B- never follows O; else BIO."""
    tags = [t for s in sentences for t in s]
    if any(t[:2] in ("E-", "S-") for t in tags):
        return "BIOES"
    b_after_o = i_starts = 0
    for s in sentences:
        for prev, tag in zip(["O", *s], s):
            b_after_o += tag.startswith("B-") and (prev == "O" or prev[2:] != tag[2:])
            i_starts += tag.startswith("I-") and (prev == "O" or prev[2:] != tag[2:])
    return "IOB1" if i_starts and not b_after_o else "BIO"


def to_bio(tags: list[str], scheme: str, where: str = "") -> list[str]:
    """The tags in BIO. IOB1: an I- that begins an entity becomes B-; BIOES: S- becomes B-, E- becomes I-. A
    tag outside the scheme, or (BIO, BIOES) an I- of a type not begun just before, is a DataError naming
    `where`."""
    out, prev = [], "O"
    for i, tag in enumerate(tags):
        m = _TAG_RE.fullmatch(tag)
        if not m or (scheme != "BIOES" and tag != "O" and m.group(1) in "ES"):
            raise DataError(f"{where}: tag {tag!r} is not a {scheme} tag (O, B-TYPE, I-TYPE"
                            + (", E-TYPE, S-TYPE" if scheme == "BIOES" else "") + ")")
        if tag == "O":
            out.append("O")
        else:
            prefix, kind = m.group(1), m.group(2)
            continues = prev != "O" and prev[2:] == kind and (prev[0] in "BI")
            if prefix in "IE" and not continues:
                if scheme == "IOB1" and prefix == "I":
                    prefix = "B"
                else:
                    raise DataError(f"{where}: {tag} of a type not begun (after {prev}; {scheme} begins an entity "
                                    f"with B-{kind}{' or S-' + kind if scheme == 'BIOES' else ''})")
            out.append(f"{'B' if prefix in 'BS' else 'I'}-{kind}")
        prev = "O" if tag != "O" and m.group(1) in "ES" else out[-1]
    return out


def entity_scores(true: list[list[str]], pred: list[list[str]]) -> dict:
    """The field's measures: entity-level precision, recall and F1 (an entity counts when its span and type
    are exact), micro-averaged over all entities and per type, and token accuracy. As seqeval (default mode)
    and conlleval compute them."""
    per_type: dict[str, list[int]] = {}  # type -> [true entities, predicted, correct]
    tokens = correct_tokens = 0
    for t_tags, p_tags in zip(true, pred, strict=True):
        t_set, p_set = set(entities(t_tags)), set(entities(p_tags))
        for kind, *_ in t_set:
            per_type.setdefault(kind, [0, 0, 0])[0] += 1
        for kind, *_ in p_set:
            per_type.setdefault(kind, [0, 0, 0])[1] += 1
        for kind, *_ in t_set & p_set:
            per_type[kind][2] += 1
        tokens += len(t_tags)
        correct_tokens += sum(a == b for a, b in zip(t_tags, p_tags))
    n_true, n_pred, n_correct = (sum(c[i] for c in per_type.values()) for i in range(3))
    scores = {**_prf(n_true, n_pred, n_correct), "accuracy": correct_tokens / max(tokens, 1), "per_type": {}}
    for kind, (t, p, c) in sorted(per_type.items()):
        scores["per_type"][kind] = {**_prf(t, p, c), "support": t}
    return scores


def _prf(n_true: int, n_pred: int, n_correct: int) -> dict[str, float]:
    precision = n_correct / n_pred if n_pred else 0.0
    recall = n_correct / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def type_confusion(true: list[list[str]], pred: list[list[str]]) -> tuple[list[str], np.ndarray]:
    """(names, matrix) over entity types: cell [t, p] counts the true entities of type t whose exact span was
    predicted as type p; the last column ("missed") true entities whose span no prediction has, the last row
    ("spurious") predicted spans that are no true entity's."""
    pairs = []
    for t_tags, p_tags in zip(true, pred, strict=True):
        t_spans = {(a, b): k for k, a, b in entities(t_tags)}
        p_spans = {(a, b): k for k, a, b in entities(p_tags)}
        pairs += [(k, p_spans.get(span, "missed")) for span, k in t_spans.items()]
        pairs += [("spurious", k) for span, k in p_spans.items() if span not in t_spans]
    kinds = sorted({k for pair in pairs for k in pair} - {"missed", "spurious"})
    names = [*kinds, "missed/spurious"]
    index = {k: i for i, k in enumerate(kinds)} | {"missed": len(kinds), "spurious": len(kinds)}
    matrix = np.zeros((len(names), len(names)), dtype=np.int64)
    for t, p in pairs:
        matrix[index[t], index[p]] += 1
    return names, matrix


# ----------------------------------------------------------------------------- decoding


def allowed_transitions(labels: list[str]) -> np.ndarray:
    """allowed[i, j]: BIO label j may follow label i (I-X only after B-X or I-X). Row len(labels): the start."""
    n = len(labels)
    allowed = np.ones((n + 1, n), dtype=bool)
    for j, label in enumerate(labels):
        if label.startswith("I-"):
            for i, prev in enumerate([*labels, "O"]):  # the last row stands for the start of the sentence
                allowed[i, j] = prev[2:] == label[2:] and prev[:2] in ("B-", "I-")
    return allowed


def viterbi(log_probs: np.ndarray, allowed: np.ndarray) -> list[int]:
    """The most probable label sequence (of the per-word log-probabilities, words x labels) that is a valid
    BIO sequence: no I-X but after B-X or I-X. Without a CRF: the transitions are allowed or not."""
    n, k = log_probs.shape
    if n == 0:
        return []
    forbid = np.where(allowed, 0.0, -np.inf)
    score = log_probs[0] + forbid[k]
    back = np.zeros((n, k), dtype=np.int64)
    for t in range(1, n):
        total = score[:, None] + forbid[:k]  # (from, to)
        back[t] = total.argmax(0)
        score = total.max(0) + log_probs[t]
    best = [int(score.argmax())]
    for t in range(n - 1, 0, -1):
        best.append(int(back[t, best[-1]]))
    return best[::-1]


# ----------------------------------------------------------------------------- reading


def read_tagged(path: str, scheme: str | None = None, tag_column: int = -1, text_field: str = "text"
                ) -> tuple[list[Sentence], str]:
    """(sentences in BIO, the scheme the file was in) of a CoNLL-style file (a word and its tags per line, the
    word first and the tag last, or in `tag_column`; a blank line between sentences; -DOCSTART- lines
    skipped; a Chinese character per line reads the same) or a .jsonl file (a sentence per line:
    {"tokens": [...], "tags": [...]}, or {"text": ..., "entities": [[start, end, type], ...]} with character
    offsets). `scheme` (BIO, IOB1, BIOES) is detected when not given."""
    raw = _read_jsonl(path, text_field) if path.endswith(".jsonl") else _read_columns(path, tag_column)
    if not raw:
        raise DataError(f"{path}: no sentences")
    scheme = scheme or detect_scheme([s.tags for s in raw])
    if scheme not in SCHEMES:
        raise DataError(f"{path}: unknown tag scheme {scheme!r} (one of {', '.join(SCHEMES)})")
    for s in raw:
        s.tags = to_bio(s.tags, scheme, s.where)
    return raw, scheme


def _read_columns(path: str, tag_column: int) -> list[Sentence]:
    sentences, words, tags, start, columns = [], [], [], 0, None
    lines = read_text(path).split("\n")
    for n, line in enumerate([*lines, ""], 1):
        parts = line.split()
        if parts and parts[0] == "-DOCSTART-":
            continue
        if not parts:
            if words:
                sentences.append(Sentence(words, tags, f"{path}:{start}"))
                words, tags = [], []
            continue
        if columns is None:
            columns = len(parts)
            if columns < 2:
                raise DataError(f"{path}:{n}: a word and its tag expected, got {len(parts)} column")
            if not -columns <= tag_column < columns:
                raise DataError(f"{path}: --tag-column {tag_column} is outside the file's {columns} columns")
        if len(parts) != columns:
            raise DataError(f"{path}:{n}: expected {columns} columns, as the first line, got {len(parts)}")
        if not words:
            start = n
        words.append(parts[0])
        tags.append(parts[tag_column])
    return sentences


def _read_jsonl(path: str, text_field: str) -> list[Sentence]:
    from corpus import jsonl_rows
    sentences = []
    for n, row in jsonl_rows(path, read_text(path)):
        where = f"{path}:{n}"
        if "tokens" in row:
            words, tags = row.get("tokens"), row.get("tags")
            if not isinstance(words, list) or not isinstance(tags, list) or len(words) != len(tags) \
                    or not all(isinstance(x, str) and x for x in words + tags):
                raise DataError(f"{where}: 'tokens' and 'tags' must be lists of strings of the same length")
            sentences.append(Sentence(words, tags, where))
        elif isinstance(row.get(text_field), str):
            sentences.append(_spans_to_tags(row[text_field], row.get("entities", []), where))
        else:
            raise DataError(f"{where}: expected 'tokens' and 'tags', or {text_field!r} and 'entities'")
    return sentences


def _spans_to_tags(text: str, spans, where: str) -> Sentence:
    words, offsets = split_words(text)
    tags = ["O"] * len(words)
    if not isinstance(spans, list):
        raise DataError(f"{where}: 'entities' must be a list of [start, end, type]")
    for span in spans:
        if isinstance(span, dict):
            span = [span.get("start"), span.get("end"), span.get("type", span.get("label"))]
        if not (isinstance(span, list) and len(span) == 3 and all(isinstance(x, int) for x in span[:2])
                and isinstance(span[2], str) and 0 <= span[0] < span[1] <= len(text)):
            raise DataError(f"{where}: entity {span!r} is not [start, end, type] within the text's {len(text)} "
                            "characters")
        inside = [i for i, (a, b) in enumerate(offsets) if a < span[1] and b > span[0]]
        if not inside or offsets[inside[0]][0] != span[0] or offsets[inside[-1]][1] != span[1]:
            raise DataError(f"{where}: entity {text[span[0]:span[1]]!r} ({span[0]}-{span[1]}) does not start and end "
                            "where words do")
        if any(tags[i] != "O" for i in inside):
            raise DataError(f"{where}: entity {text[span[0]:span[1]]!r} overlaps another")
        tags[inside[0]] = f"B-{span[2]}"
        for i in inside[1:]:
            tags[i] = f"I-{span[2]}"
    return Sentence(words, tags, where, offsets, text)


def split_words(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Text as the words of BERT's basic tokenizer (punctuation apart, a CJK character each) with their
    character offsets in `text`: what predict labels, and what entities' offsets refer to."""
    words, offsets = [], []
    for m in re.finditer(r"\S+", text):
        for word in _whitespace_words(m.group()):  # splits CJK characters (and drops control characters)
            position = text.find(word, offsets[-1][1] if offsets else m.start())
            if position < 0:  # changed by cleaning (a control character inside): the whole run
                words.append(m.group())
                offsets.append((m.start(), m.end()))
                break
            for piece in _split_punctuation(word):
                at = text.find(piece, position)
                words.append(piece)
                offsets.append((at, at + len(piece)))
                position = at + len(piece)
    return words, offsets


def _split_punctuation(word: str) -> list[str]:
    """The word's parts as BERT's basic tokenizer splits them (punctuation apart), case kept."""
    return _split_word(word, do_lower_case=False)


# ----------------------------------------------------------------------------- word pieces


@dataclass
class Window:
    """The model's input for part of a sentence: [CLS] pieces [SEP], each piece's label (the word's tag at its
    first piece, IGNORE elsewhere) and the word it belongs to (-1 for [CLS], [SEP])."""
    sentence: int
    input_ids: list[int]
    labels: list[int]
    word_index: list[int]


def windows(sentences: list[Sentence], tokenizer: BertTokenizer, label_ids: dict[str, int], max_length: int,
            stride: int | None = None) -> tuple[list[Window], int]:
    """Every sentence as word-piece windows of at most max_length (with [CLS] and [SEP]); a longer sentence
    as overlapping windows, `stride` pieces apart (default: half a window), never cut short. Returns the
    windows and how many sentences needed more than one."""
    room = max_length - 2
    stride = stride or max(1, room // 2)
    out, split = [], 0
    for k, s in enumerate(sentences):
        pieces = [tokenizer.tokenize_to_ids(w) or [tokenizer.unk_token_id] for w in s.words]
        flat = [(p, i, j == 0) for i, ps in enumerate(pieces) for j, p in enumerate(ps)]
        starts = [0]
        while starts[-1] + room < len(flat):
            starts.append(starts[-1] + stride)
        split += len(starts) > 1
        for start in starts:
            part = flat[start:start + room]
            labels = [label_ids.get(s.tags[i], IGNORE) if first and s.tags else IGNORE for _, i, first in part]
            out.append(Window(k, [tokenizer.cls_token_id, *(p for p, _, _ in part), tokenizer.sep_token_id],
                              [IGNORE, *labels, IGNORE], [-1, *(i for _, i, _ in part), -1]))
    return out, split


def word_scores(sentences: list[Sentence], wins: list[Window], log_probs: list[np.ndarray]) -> list[np.ndarray]:
    """Per sentence, per word, the label log-probabilities at its first piece, from the window where that
    piece lies farthest from an edge (overlapping windows each see a word, with more context in one)."""
    n_labels = log_probs[0].shape[-1] if log_probs else 1
    best = [np.zeros((len(s.words), n_labels)) for s in sentences]
    margin = [np.full(len(s.words), -1) for s in sentences]
    for w, lp in zip(wins, log_probs):
        seen = set()
        for position, i in enumerate(w.word_index):
            if i < 0 or i in seen:
                continue
            seen.add(i)  # the word's first piece in this window
            distance = min(position, len(w.word_index) - 1 - position)
            if distance > margin[w.sentence][i]:
                margin[w.sentence][i], best[w.sentence][i] = distance, lp[position]
    return best


def label_list(sentences: list[Sentence]) -> list[str]:
    """The tag set of the training data, O first, then B- and I- of each type, by type."""
    kinds = sorted({t[2:] for s in sentences for t in s.tags if t != "O"})
    return ["O", *(f"{p}-{k}" for k in kinds for p in "BI")]


def save_labels(labels: list[str], path: str) -> None:
    from files import write_json
    write_json(path, {"labels": labels, "scheme": "BIO"})


def load_labels(path: str) -> list[str]:
    """A model's tag set (labels.json); DataError when it is not one."""
    try:
        with open(path, encoding="utf-8") as f:
            labels = json.load(f)["labels"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not a tag set ({type(e).__name__})") from None
    if not isinstance(labels, list) or not labels or len(set(labels)) < len(labels) \
            or not all(isinstance(t, str) and _TAG_RE.fullmatch(t) and t[:2] not in ("E-", "S-") for t in labels):
        raise DataError(f"{path}: not a BIO tag set (O, B-TYPE, I-TYPE)")
    return labels


def spans(words_offsets: list[tuple[int, int]], tags: list[str], probs: np.ndarray | None = None
          ) -> Iterator[tuple[str, int, int, float]]:
    """(type, start char, end char, score) of each entity of a word-tagged text; the score is the mean of the
    probability of the chosen tag over the entity's words (1.0 without probabilities)."""
    for kind, first, last in entities(tags):
        score = float(np.mean(probs[first:last + 1])) if probs is not None else 1.0
        yield kind, words_offsets[first][0], words_offsets[last][1], score

