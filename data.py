"""
BERT's data logic: pretraining instances with dynamic masking (as Google's create_pretraining_data.py,
with the same names), built as a stream over a tokenised corpus of any size, and classification files
with dynamic padding.

The tokenizer and vocabulary trainer live in tokenization.py, corpus reading in corpus.py and the
prepared (tokenised, memory-mapped) corpus in token_cache.py; their public names are importable from
here too. Bad input raises DataError, whose message is one line naming the file (and line).
"""

import csv
import io
import json
import os
import queue
import random
import re
import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from cli import DataError
from corpus import corpus_files, default_corpus, default_corpus_file, jsonl_rows, read_documents, split_sentences
from files import write_json, write_text_atomic
from token_cache import (TokenizedCorpus, cached_vocab, corpus_vocab, open_prepared, prepare_corpus,
                         prepare_pretraining_corpus, tokenize_corpus)
from tokenization import SPECIAL_TOKENS, BertTokenizer, read_text, train_wordpiece_vocab

# The names of the data path, wherever they live: `from data import ...` is the one import a user needs.
__all__ = ["DataError", "SPECIAL_TOKENS", "BertTokenizer", "train_wordpiece_vocab", "read_text", "write_text_atomic",
           "corpus_files", "read_documents", "split_sentences", "default_corpus",
           "default_corpus_file", "jsonl_rows", "TokenizedCorpus", "tokenize_corpus", "prepare_corpus",
           "open_prepared", "prepare_pretraining_corpus", "split_ids", "cached_vocab", "corpus_vocab", "truncate_seq_pair",
           "PretrainingData", "Prefetcher", "ClassificationExample", "read_classification_file", "LabelMap",
           "encode_classification", "classification_batches"]

# -----------------------------------------------------------------------------
# Pretraining instances with dynamic masking (Google's create_pretraining_data.py)


def split_ids(n: int, fraction: float, seed: int, cap: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(kept ids, held-out ids), both ascending: a seeded random share `fraction` of n items (a corpus's
    documents, a task's examples) held out for validation: at least one when fraction > 0 and n >= 2,
    never all of them, at most `cap`. The one split of the project: train_mlm.py's and finetune_cls.py's."""
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    k = min(n - 1, max(1, round(n * fraction))) if fraction > 0 else 0
    if cap is not None:
        k = min(k, cap)
    held = np.zeros(n, dtype=bool)
    held[random.Random(seed).sample(range(n), max(0, k))] = True
    dtype = np.int32 if n < 2 ** 31 else np.int64  # 4 bytes an id: a corpus may have millions of documents
    return np.flatnonzero(~held).astype(dtype), np.flatnonzero(held).astype(dtype)


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
    """An endless stream of masked-LM (+ next sentence prediction) batches, built as it is read.

    An epoch is one pass over the documents in an order shuffled per epoch. Instances are made per
    document as the stream reaches it, as Google's create_instances_from_document makes them (with an RNG
    seeded by (seed, epoch, position), so any point of the stream can be rebuilt), and shuffled within a
    block: the documents from the block's start until the block holds shuffle_buffer instances. Memory is
    one block, whatever the corpus size. Masks are drawn when an instance goes into a batch, with an RNG
    seeded by its place in the stream: every epoch gets fresh masks (dynamic masking) and a batch does not
    depend on how it is split across ranks. Rank r of world_size takes instances [r*batch_size,
    (r+1)*batch_size) of each global batch; the stream runs on into the next epoch without dropping
    anything. state_dict() is the stream position: load_state_dict continues it exactly.

    next_sentence=False gives single segments '[CLS] A [SEP]' filled up to the target length with whole
    sentences of one document (RoBERTa's FULL-SENTENCES, without NSP); next_sentence_labels are then all 0
    and should be ignored."""

    def __init__(self, corpus: TokenizedCorpus, tokenizer: BertTokenizer, max_seq_length: int = 128,
                 max_predictions_per_seq: int = 20, masked_lm_prob: float = 0.15, short_seq_prob: float = 0.1,
                 next_sentence: bool = True, whole_word_masking: bool = False, seed: int = 12345,
                 rank: int = 0, world_size: int = 1, shuffle_buffer: int = 10000):
        if corpus.num_documents() == 0:
            raise ValueError("the corpus has no documents")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        if max_seq_length < 5:
            raise ValueError(f"max_seq_length={max_seq_length} is too short")
        if shuffle_buffer < 1:
            raise ValueError(f"shuffle_buffer={shuffle_buffer} must be positive")
        self.max_seq_length, self.max_predictions_per_seq = max_seq_length, max_predictions_per_seq
        self.masked_lm_prob, self.short_seq_prob, self.next_sentence = masked_lm_prob, short_seq_prob, next_sentence
        self.whole_word_masking, self.seed, self.rank, self.world_size = whole_word_masking, seed, rank, world_size
        self.shuffle_buffer = shuffle_buffer
        self.cls_id, self.sep_id, self.pad_id, self.mask_id = (
            tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id, tokenizer.mask_token_id)
        self.not_candidate = np.zeros(len(tokenizer), dtype=bool)  # never masked
        self.not_candidate[[self.cls_id, self.sep_id, self.pad_id]] = True
        self.is_subword = tokenizer.is_subword()
        # random replacements come from the ordinary tokens: not the special tokens nor [unusedN] slots
        self.random_ids = np.array([i for i, t in enumerate(tokenizer.ids_to_tokens)
                                    if i not in tokenizer.special_ids and not re.fullmatch(r"\[unused\d+\]", t)])
        self.documents = corpus  # documents read from the cache as the stream reaches them
        # the stream position: epoch, the block (its first position in the epoch's document order), the
        # next instance in the block, and how many instances of the epoch were taken before it
        self.epoch, self.block, self.index, self.cursor = 0, 0, 0, 0
        self._order_epoch, self._order = None, None
        self._block_key, self._block, self._block_end = None, [], 0

    # -- the stream

    def _document_order(self, epoch: int) -> np.ndarray:
        if self._order_epoch != epoch:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.documents))
            self._order = order.astype(np.int32) if len(order) < 2 ** 31 else order  # 4 bytes a document
            self._order_epoch = epoch
        return self._order

    def _block_instances(self, epoch: int, start: int) -> tuple[list, int]:
        """The shuffled instances of the block of `epoch` that starts at position `start` of its document
        order, and the position where the next block starts."""
        if self._block_key != (epoch, start):
            order, instances, k = self._document_order(epoch), [], start
            while k < len(order) and len(instances) < self.shuffle_buffer:
                rng = random.Random(f"{self.seed}/{epoch}/{k}")  # str seeds are hashed deterministically
                instances.extend(self._create_instances_from_document(int(order[k]), rng))
                k += 1
            random.Random(f"{self.seed}/{epoch}/block/{start}").shuffle(instances)
            self._block_key, self._block, self._block_end = (epoch, start), instances, k
        return self._block, self._block_end

    def _next_instance(self) -> tuple[tuple[np.ndarray, int, int], np.random.Generator]:
        """The next instance of the stream and the RNG for its masks; moves the position past it."""
        instances, end = self._block_instances(self.epoch, self.block)
        empty_blocks = 0
        while self.index >= len(instances):
            if end >= len(self.documents):  # the epoch is over
                if self.cursor == 0 and self.block == 0:
                    raise ValueError("the corpus gives no pretraining instances")
                self.epoch, self.block, self.cursor = self.epoch + 1, 0, 0
            else:
                self.block = end
            self.index = 0
            instances, end = self._block_instances(self.epoch, self.block)
            empty_blocks += 1
            if empty_blocks > len(self.documents) + 1:
                raise ValueError("the corpus gives no pretraining instances")
        rng = np.random.default_rng([self.seed, self.epoch, self.block, self.index])
        instance = instances[self.index]
        self.index += 1
        self.cursor += 1
        return instance, rng

    def _epoch_instances(self, epoch: int) -> list[tuple[np.ndarray, int, int]]:
        """Every instance of an epoch, in stream order (for small corpora: tests and inspection)."""
        instances, start = [], 0
        while start < len(self.documents):
            block, start = self._block_instances(epoch, start)
            instances.extend(block)
        return instances

    # -- instances (Google's create_instances_from_document)

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

    def create_masked_lm_predictions(self, tokens: np.ndarray, rng: np.random.Generator,
                                     masked_lm_prob: float | None = None
                                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(masked tokens, masked_lm_positions (ascending), masked_lm_ids) for one instance: masked_lm_prob
        (default: the stream's, BERT's 15%) of the tokens other than [CLS]/[SEP]/[PAD], capped at
        max_predictions_per_seq; of those 80% become [MASK], 10% a random token, 10% stay. With whole-word
        masking a word (a token and its following '##' pieces) is masked all together, never exceeding the
        number to predict."""
        cand = np.flatnonzero(~self.not_candidate[tokens])
        rate = self.masked_lm_prob if masked_lm_prob is None else masked_lm_prob
        num_to_predict = min(self.max_predictions_per_seq, max(1, int(round(len(tokens) * rate))))
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

    def next_batch(self, batch_size: int, masked_lm_prob: float | None = None) -> dict[str, torch.Tensor]:
        """The next batch; masked_lm_prob overrides the stream's masking rate for it (a schedule's)."""
        L, P = self.max_seq_length, self.max_predictions_per_seq
        input_ids = np.zeros((batch_size, L), dtype=np.int64)
        input_mask = np.zeros((batch_size, L), dtype=np.int64)
        segment_ids = np.zeros((batch_size, L), dtype=np.int64)
        positions = np.zeros((batch_size, P), dtype=np.int64)
        ids = np.zeros((batch_size, P), dtype=np.int64)
        weights = np.zeros((batch_size, P), dtype=np.float32)
        nsp = np.zeros(batch_size, dtype=np.int64)
        for k in range(batch_size * self.world_size):
            (tokens, len_a, is_random_next), rng = self._next_instance()
            b = k - self.rank * batch_size
            if not 0 <= b < batch_size:
                continue  # another rank's part of the global batch
            tokens = tokens.astype(np.int64)
            masked, pos, labels = self.create_masked_lm_predictions(tokens, rng, masked_lm_prob)
            n = len(tokens)
            input_ids[b, :n] = masked
            input_mask[b, :n] = 1
            segment_ids[b, len_a:n] = 1
            positions[b, :len(pos)] = pos
            ids[b, :len(pos)] = labels
            weights[b, :len(pos)] = 1.0
            nsp[b] = is_random_next
        # The model's (Hugging Face's) names for Google's input_mask and segment_ids.
        batch = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(input_mask),
                 "token_type_ids": torch.from_numpy(segment_ids),
                 "masked_lm_positions": torch.from_numpy(positions),
                 "masked_lm_ids": torch.from_numpy(ids), "masked_lm_weights": torch.from_numpy(weights),
                 "next_sentence_labels": torch.from_numpy(nsp)}
        return batch

    def state_dict(self) -> dict:
        """The position in the stream (global over ranks): enough to continue exactly."""
        return {"epoch": self.epoch, "block": self.block, "index": self.index, "cursor": self.cursor,
                "seed": self.seed, "shuffle_buffer": self.shuffle_buffer}

    def load_state_dict(self, state: dict) -> None:
        """Continue at a position state_dict() gave (ValueError when `state` is not one of this stream's: a
        checkpoint may be damaged or crafted)."""
        _check_position(state, len(self.documents), self.documents.num_tokens() if hasattr(self.documents, "num_tokens")
                        else sum(len(t) for d in self.documents for t in d))
        seed, shuffle_buffer = int(state["seed"]), int(state.get("shuffle_buffer", self.shuffle_buffer))
        if (seed, shuffle_buffer) != (self.seed, self.shuffle_buffer):  # another stream: nothing cached holds
            self._order_epoch, self._block_key = None, None
        self.epoch, self.seed, self.shuffle_buffer = int(state["epoch"]), seed, shuffle_buffer
        self.block, self.index, self.cursor = 0, 0, 0
        if "block" in state:
            self.block, self.index, self.cursor = int(state["block"]), int(state["index"]), int(state["cursor"])
        else:  # a whole-epoch stream's state ({epoch, cursor, seed}): the same number of instances into its epoch
            for _ in range(int(state["cursor"])):
                self._next_instance()


def _check_position(state, n_documents: int, n_tokens: int) -> None:
    """ValueError unless `state` is a stream position: whole numbers in range (a block starts at a document
    of the epoch's order; a whole-epoch state's cursor counts instances, fewer than the tokens)."""
    if not isinstance(state, dict):
        raise ValueError(f"the data position is a {type(state).__name__}, not a dict")
    limits = {"epoch": 2 ** 31, "seed": 2 ** 32, "shuffle_buffer": 2 ** 31, "block": n_documents, "index": 2 ** 31,
              "cursor": n_tokens + 1 if "block" not in state else 2 ** 62}
    for name in ("epoch", "seed", "cursor", *[k for k in ("shuffle_buffer", "block", "index") if k in state]):
        value = state.get(name)
        low = 1 if name == "shuffle_buffer" else 0
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value < limits[name]:
            raise ValueError(f"the data position's {name} is {value!r}, not a whole number in [{low}, {limits[name]})")
    if ("block" in state) != ("index" in state):
        raise ValueError("the data position has a block without its index, or an index without its block")


class Prefetcher:
    """Batches of a PretrainingData made by a background thread, `depth` ahead, so that the training
    step never waits for data (numpy and torch release the GIL for most of their work). state_dict() is
    the position after the last batch handed out, not after the ones made ahead. mask_prob(k), if given, is
    the masking rate of the k-th batch it makes (0, 1, ...), and batch_size may be such a schedule too."""

    def __init__(self, data: PretrainingData, batch_size: int | Callable[[int], int], depth: int = 2,
                 mask_prob: Callable[[int], float] | None = None):
        self.data, self.batch_size, self.mask_prob, self._made = data, batch_size, mask_prob, 0
        self._state = data.state_dict()
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="batches", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rate = self.mask_prob(self._made) if self.mask_prob else None
                size = self.batch_size(self._made) if callable(self.batch_size) else self.batch_size
                item = (self.data.next_batch(size, rate), self.data.state_dict())
                self._made += 1
            except BaseException as e:  # handed to the consumer, raised there
                item = e
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if isinstance(item, BaseException):
                return

    def next_batch(self) -> dict[str, torch.Tensor]:
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        batch, self._state = item
        return batch

    def state_dict(self) -> dict:
        return dict(self._state)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


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
        yield from jsonl_rows(path, text)
        return
    if ext not in (".tsv", ".csv"):
        raise DataError(f"{path}: unknown format (expected .tsv, .csv or .jsonl)")
    # GLUE's TSV files have no quoting; CSV follows the csv module's dialect. A field may be as long as the
    # file (csv's own limit, 128 KB, would refuse a long document): the text is in memory already.
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
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
    text = read_text(path)
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
        write_json(path, {"labels": self.labels})

    @classmethod
    def load(cls, path: str) -> "LabelMap":
        try:
            labels = json.loads(read_text(path))["labels"]
        except (json.JSONDecodeError, KeyError, TypeError, RecursionError) as e:
            raise DataError(f"{path}: not a label map ({type(e).__name__}: {str(e)[:80]})") from None
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x for x in labels) \
                or len(set(labels)) < len(labels):
            raise DataError(f"{path}: not a label map (\"labels\" must be a list of distinct label names)")
        return cls(labels)


def encode_classification(examples: list[ClassificationExample], tokenizer: BertTokenizer, label_map: LabelMap,
                          max_length: int = 128) -> list[dict]:
    return [dict(tokenizer.encode(e.text_a, e.text_b, max_length=max_length),
                 label=label_map.encode(e.label, f"{e.path or '<examples>'}:{e.line}")) for e in examples]


def classification_batches(encoded: list[dict], batch_size: int, pad_token_id: int, shuffle: bool, seed: int,
                           bucket_size: int | None = 100) -> Iterator[dict[str, torch.Tensor]]:
    """Batches padded to their longest sequence. With bucket_size, each run of bucket_size*batch_size
    examples is sorted by length before being cut into batches (similar lengths, little padding) and the
    batch order is shuffled; every example appears exactly once. An example's label is a class (a sequence's)
    or a list, one per token (padded with -100, which the loss leaves out)."""
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
        if isinstance(encoded[batch[0]]["label"], list):  # a label per token (named entities): -100 pads
            labels = np.full((len(batch), length), -100, dtype=np.int64)
            for b, i in enumerate(batch):
                labels[b, :len(encoded[i]["label"])] = encoded[i]["label"]
            labels = torch.from_numpy(labels)
        else:
            labels = torch.tensor([encoded[i]["label"] for i in batch], dtype=torch.int64)
        yield {"input_ids": torch.from_numpy(input_ids), "token_type_ids": torch.from_numpy(token_type_ids),
               "attention_mask": torch.from_numpy(attention_mask), "labels": labels}
