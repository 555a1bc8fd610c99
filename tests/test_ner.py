"""ner.py: entity spans and scores against seqeval (the test-only oracle, as transformers is for the model),
exactly, on random tag sequences with ill-formed ones among them; tag schemes; readers; word-piece windows;
constrained decoding."""

import json
import random

import numpy as np
import pytest

import ner
from cli import DataError
from tokenization import BertTokenizer

seqeval = pytest.importorskip("seqeval.metrics")
from seqeval.metrics.sequence_labeling import get_entities  # noqa: E402

TYPES = ["PER", "LOC", "ORG"]


def random_tags(rng: random.Random, n: int, prefixes: str = "BIO") -> list[str]:
    """Any sequence, well-formed or not: I- after O, types changing inside an entity, E- and S-."""
    return [t if t == "O" else f"{t}-{rng.choice(TYPES)}" for t in (rng.choice(prefixes) for _ in range(n))]


@pytest.mark.parametrize("prefixes", ["BIO", "BIOES", "IO"])
def test_entities_are_conllevals_as_seqeval_reads_them(prefixes):
    rng = random.Random(prefixes)
    for _ in range(3000):
        tags = random_tags(rng, rng.randint(0, 12), prefixes)
        assert ner.entities(tags) == get_entities(tags), tags


def test_scores_equal_seqevals_exactly_on_random_sentences():
    rng = random.Random(0)
    for trial in range(200):
        true, pred = [], []
        for _ in range(rng.randint(1, 8)):
            n = rng.randint(1, 15)
            true.append(random_tags(rng, n, "BIO" if trial % 2 else "BIOES"))
            # predictions: mostly the truth, some tags changed (ill-formed ones among them)
            pred.append([t if rng.random() < 0.7 else random_tags(rng, 1, "BIOES")[0] for t in true[-1]])
        ours = ner.entity_scores(true, pred)
        assert ours["precision"] == seqeval.precision_score(true, pred, zero_division=0)
        assert ours["recall"] == seqeval.recall_score(true, pred, zero_division=0)
        assert ours["f1"] == pytest.approx(seqeval.f1_score(true, pred, zero_division=0), abs=1e-15)
        assert ours["accuracy"] == seqeval.accuracy_score(true, pred)
        report = seqeval.classification_report(true, pred, output_dict=True, zero_division=0)
        for kind, s in ours["per_type"].items():
            assert (s["precision"], s["recall"], s["support"]) == \
                (report[kind]["precision"], report[kind]["recall"], report[kind]["support"]), kind
            assert s["f1"] == pytest.approx(report[kind]["f1-score"], abs=1e-15)


def test_tag_schemes_are_detected_and_converted_to_bio():
    iob1 = [["I-PER", "I-PER", "O", "I-LOC"], ["I-ORG", "B-ORG", "O"]]  # CoNLL-2003 as shipped
    bio = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "B-ORG", "O"]]
    bioes = [["B-PER", "E-PER", "O", "S-LOC"], ["S-ORG", "S-ORG", "O"]]
    assert [ner.detect_scheme(x) for x in (iob1, bio, bioes)] == ["IOB1", "BIO", "BIOES"]
    for scheme, sentences in (("IOB1", iob1), ("BIO", bio), ("BIOES", bioes)):
        converted = [ner.to_bio(s, scheme) for s in sentences]
        assert converted == bio
        assert [ner.entities(s) for s in sentences] == [ner.entities(s) for s in converted]  # the same entities
    with pytest.raises(DataError, match=r"f.txt:3: I-LOC of a type not begun \(after B-PER"):
        ner.to_bio(["B-PER", "I-LOC"], "BIO", "f.txt:3")
    with pytest.raises(DataError, match="tag 'PER' is not a BIO tag"):
        ner.to_bio(["PER"], "BIO", "f.txt:1")
    with pytest.raises(DataError, match="tag 'S-PER' is not a BIO tag"):
        ner.to_bio(["S-PER"], "BIO", "f.txt:1")


def test_the_type_confusion_counts_missed_and_spurious_spans():
    true = [["B-PER", "I-PER", "O", "B-LOC", "O", "B-ORG"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG", "B-LOC", "O"]]
    names, m = ner.type_confusion(true, pred)
    assert names == ["LOC", "ORG", "PER", "missed/spurious"]
    assert m[2, 2] == 1 and m[0, 1] == 1  # PER right; the LOC span predicted as ORG
    assert m[1, 3] == 1 and m[3, 0] == 1  # the ORG missed; a spurious LOC
    assert m.sum() == 4


def test_viterbi_keeps_to_valid_bio_and_agrees_with_argmax_when_that_is_valid():
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    allowed = ner.allowed_transitions(labels)
    rng = np.random.default_rng(0)
    for _ in range(500):
        lp = np.log(rng.dirichlet(np.ones(5), size=rng.integers(1, 9)))
        path = [labels[i] for i in ner.viterbi(lp, allowed)]
        assert ner.to_bio(path, "BIO") == path  # valid: to_bio raises on an I- not begun
        greedy = [labels[i] for i in lp.argmax(1)]
        try:
            ner.to_bio(greedy, "BIO")
            assert path == greedy
        except DataError:
            pass
    # the best valid path, by hand: I-PER at the start is not allowed, so B-PER I-PER wins over O I-PER
    lp = np.log(np.array([[0.4, 0.35, 0.25, 0, 0], [0.1, 0.0, 0.9, 0, 0]]) + 1e-12)
    assert [labels[i] for i in ner.viterbi(lp, allowed)] == ["B-PER", "I-PER"]


def test_readers_columns_jsonl_and_chinese_characters(tmp_path):
    conll = tmp_path / "en.txt"
    conll.write_text("-DOCSTART- -X- O O\n\nEU NNP B-NP I-ORG\nrejects VBZ B-VP O\nGerman JJ B-NP I-MISC\n\n"
                     "Peter NNP B-NP I-PER\nBlackburn NNP I-NP I-PER\n")
    sentences, scheme = ner.read_tagged(str(conll))
    assert scheme == "IOB1" and [s.words for s in sentences] == [["EU", "rejects", "German"], ["Peter", "Blackburn"]]
    assert [s.tags for s in sentences] == [["B-ORG", "O", "B-MISC"], ["B-PER", "I-PER"]]
    assert sentences[1].where == f"{conll}:7"
    chinese = tmp_path / "zh.txt"
    chinese.write_text("我\tO\n在\tO\n北\tB-LOC\n京\tI-LOC\n\n", encoding="utf-8")
    (s,), scheme = ner.read_tagged(str(chinese))
    assert scheme == "BIO" and s.words == ["我", "在", "北", "京"] and ner.entities(s.tags) == [("LOC", 2, 3)]
    jsonl = tmp_path / "x.jsonl"
    jsonl.write_text(json.dumps({"tokens": ["Ann", "lives", "here"], "tags": ["B-PER", "O", "O"]}) + "\n"
                     + json.dumps({"text": "Bob met Ann in Paris.", "entities": [[0, 3, "PER"], [15, 20, "LOC"]]}) + "\n")
    sentences, _ = ner.read_tagged(str(jsonl))
    assert sentences[1].words == ["Bob", "met", "Ann", "in", "Paris", "."]
    assert sentences[1].tags == ["B-PER", "O", "O", "O", "B-LOC", "O"] and sentences[1].offsets[4] == (15, 20)


@pytest.mark.parametrize("content, message", [
    ("a O\nb O extra\n", "x.txt:2: expected 2 columns, as the first line, got 3"),
    ("a B-PER\nb I-LOC\n", "x.txt:1: I-LOC of a type not begun"),
    ("a PERSON\n", "tag 'PERSON' is not a BIO tag"),
    ("", "x.txt: file is empty"),
    ("justaword\n", "x.txt:1: a word and its tag expected"),
])
def test_bad_tagged_files_are_one_line(tmp_path, content, message):
    path = tmp_path / "x.txt"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as e:
        ner.read_tagged(str(path))
    assert "\n" not in str(e.value)


def test_a_long_sentence_is_split_into_overlapping_windows_and_merged_without_loss(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "w", "##x"]) + "\n")
    tok = BertTokenizer(str(vocab))
    words = ["w", "wx"] * 30  # 90 pieces
    tags = ["B-PER", "I-PER"] * 30
    sentence = ner.Sentence(words, tags)
    wins, split = ner.windows([sentence], tok, {"O": 0, "B-PER": 1, "I-PER": 2}, max_length=32)
    assert split == 1 and len(wins) > 1 and all(len(w.input_ids) <= 32 for w in wins)
    assert {i for w in wins for i in w.word_index if i >= 0} == set(range(60))  # every word in some window
    for w in wins:  # a word's label at its first piece only
        for position, i in enumerate(w.word_index):
            first = i >= 0 and (position == 1 or w.word_index[position - 1] != i)
            assert (w.labels[position] != ner.IGNORE) == (first and w.input_ids[position] == 5), (position, i)
    # each window "predicts" its word indices; the merge gives every word the view from its most central window
    log_probs = [np.tile(np.arange(3.0), (len(w.input_ids), 1)) + k for k, w in enumerate(wins)]
    merged = ner.word_scores([sentence], wins, log_probs)[0]
    assert merged.shape == (60, 3) and not (merged == 0).all(axis=1).any()


def test_words_and_their_character_offsets():
    text = "Bob met Ann, in Paris.  北京欢迎你"
    words, offsets = ner.split_words(text)
    assert words == ["Bob", "met", "Ann", ",", "in", "Paris", ".", "北", "京", "欢", "迎", "你"]
    assert all(text[a:b] == w for w, (a, b) in zip(words, offsets))
    assert list(ner.spans(offsets, ["B-PER", "O", "B-PER", "O", "O", "B-LOC", "O", "B-LOC", "I-LOC", "O", "O", "O"])) \
        == [("PER", 0, 3, 1.0), ("PER", 8, 11, 1.0), ("LOC", 16, 21, 1.0), ("LOC", 24, 26, 1.0)]
