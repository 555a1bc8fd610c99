"""corpus.py (readers, sentence splitting, the default corpus) and token_cache.py's cache of a corpus held in
memory."""

import os

import numpy as np
import pytest

import corpus
import token_cache
from cli import DataError
from tokenization import BertTokenizer, train_wordpiece_vocab


def write(path, text, mode="w"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
        f.write(text)
    return str(path)


def test_split_sentences():
    text = ("Mr. Smith paid $3.14 for the U.S. edition, e.g. the cheap one. Then he left! Did he return? "
            "\"Yes,\" she said. (It was late.) Dr. Who arrived at 10 p.m. on Friday. The end")
    assert corpus.split_sentences(text) == [
        "Mr. Smith paid $3.14 for the U.S. edition, e.g. the cheap one.", "Then he left!", "Did he return?",
        "\"Yes,\" she said.", "(It was late.)", "Dr. Who arrived at 10 p.m. on Friday.", "The end"]
    assert corpus.split_sentences("one line\nwrapped here. Next one.") == ["one line wrapped here.", "Next one."]
    assert corpus.split_sentences("   ") == []


def test_read_bert_format_and_folders(tmp_path):
    write(tmp_path / "c" / "b.txt", "Second doc first sentence.\nIt has two sentences.\n")
    write(tmp_path / "c" / "a.txt",
          "The first sentence.\nThe second one, e.g. this.\n\n\nAnother document.\nYes.\n")
    write(tmp_path / "c" / "sub" / "z.txt", "Nested file here.\nIt counts too.\n")
    write(tmp_path / "c" / "ignored.md", "Not a txt file.\n")
    docs = corpus.read_documents([str(tmp_path / "c")])
    assert docs == [["The first sentence.", "The second one, e.g. this."], ["Another document.", "Yes."],
                    ["Second doc first sentence.", "It has two sentences."],
                    ["Nested file here.", "It counts too."]]


def test_read_plain_prose(tmp_path):
    prose = ("It was a bright cold day in April, and the clocks were striking thirteen. Winston\n"
             "slipped quickly through the glass doors. The hallway smelt of boiled cabbage.\n\n"
             "At one end of it a coloured poster was tacked to the wall. It depicted simply an enormous face.\n")
    docs = corpus.read_documents([write(tmp_path / "p.txt", prose)])
    assert docs == [["It was a bright cold day in April, and the clocks were striking thirteen.",
                     "Winston slipped quickly through the glass doors.", "The hallway smelt of boiled cabbage.",
                     "At one end of it a coloured poster was tacked to the wall.",
                     "It depicted simply an enormous face."]]


def test_read_wikitext(tmp_path):
    text = (" \n = Valkyria Chronicles = \n \n The game was released in 2011 . It sold 1 @,@ 000 copies at "
            "3 @.@ 5 dollars . \n \n = = Gameplay = = \n \n Players fight battles . A second sentence here ? \n"
            " = = = Plot = = = \n Story text . \n = Second Article = \n \n Only one line . \n")
    docs = corpus.read_documents([write(tmp_path / "wiki.txt", text)])
    assert docs == [["The game was released in 2011 .", "It sold 1,000 copies at 3.5 dollars .",
                     "Players fight battles .", "A second sentence here ?", "Story text ."], ["Only one line ."]]


def test_read_documents_errors(tmp_path):
    with pytest.raises(DataError, match="nowhere: no such file"):
        corpus.read_documents([str(tmp_path / "nowhere")])
    os.makedirs(tmp_path / "empty_dir")
    write(tmp_path / "empty_dir" / "x.md", "text")
    with pytest.raises(DataError, match="empty_dir: folder has no .txt files"):
        corpus.read_documents([str(tmp_path / "empty_dir")])
    with pytest.raises(DataError, match="blank.txt: file is empty"):
        corpus.read_documents([write(tmp_path / "blank.txt", " \n\n  \n")])
    bad = write(tmp_path / "bad.txt", "fine line.\nsecond fine line.\nbad \xff\xfe byte.\n".encode("latin-1"), "wb")
    with pytest.raises(DataError, match=r"bad.txt:3: not valid UTF-8") as e:
        corpus.read_documents([bad])
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="no sentences"):
        corpus.read_documents([write(tmp_path / "t.txt", " = Title = \n = = Heading = = \n")])


@pytest.fixture
def tokenizer(tmp_path):
    texts = ["the cat sat on the mat.", "the dog ate the bone.", "a bird sang in the tree."] * 3
    return BertTokenizer(train_wordpiece_vocab(texts, 200, str(tmp_path / "v" / "vocab.txt")) and
                              str(tmp_path / "v" / "vocab.txt"))


def test_tokenize_corpus_and_cache(tmp_path, tokenizer, monkeypatch):
    docs = [["the cat sat on the mat.", "\x00\x01", "the dog ate."], ["\x07"], ["a bird sang."]]
    cache = str(tmp_path / "cache")
    prepared = token_cache.tokenize_corpus(docs, tokenizer, cache)
    assert not prepared.from_cache and prepared.num_documents() == 2  # empty sentences and documents dropped
    assert prepared.tokens.dtype == np.uint16 and isinstance(prepared.tokens, np.memmap)
    assert [s.tolist() for s in prepared.document(0)] == [tokenizer.tokenize_to_ids(docs[0][0]),
                                                        tokenizer.tokenize_to_ids(docs[0][2])]
    assert prepared.sentence_offsets.tolist()[-1] == len(prepared.tokens) and prepared.doc_offsets.tolist() == [0, 2, 3]

    def fail(text):
        raise AssertionError("tokenised again")
    monkeypatch.setattr(tokenizer, "tokenize_to_ids", fail)
    again = token_cache.tokenize_corpus(docs, tokenizer, cache)  # from the cache, without tokenising
    assert again.from_cache and np.array_equal(again.tokens, prepared.tokens)
    assert not [f for f in os.listdir(cache) if f.startswith(".tmp")]
    monkeypatch.undo()
    # another vocabulary (or casing, or text) is another key
    with open(tokenizer.vocab_file, "a", encoding="utf-8") as f:
        f.write("extra\n")
    other = BertTokenizer(tokenizer.vocab_file)
    assert not token_cache.tokenize_corpus(docs, other, cache).from_cache
    cased = BertTokenizer(tokenizer.vocab_file, do_lower_case=False)
    assert not token_cache.tokenize_corpus(docs, cased, cache).from_cache
    assert not token_cache.tokenize_corpus(docs[:1], other, cache).from_cache
    assert len(os.listdir(cache)) == 4


def test_prose_cleaning():
    doc = '''Compute the thing for an array.

    This function computes the :func:`numpy.thing` of ``x``, see `the docs <https://example.org>`_.
    It is *fast* and works well on large inputs [1]_.

    Parameters
    ----------
    x : array_like, optional
        The input values to be processed by the function.

    Returns
    -------
    out : ndarray

    Examples
    --------
    >>> thing([1, 2])
    array([1, 2])

    Use it like this::

        y = thing(x)
        print(y)

    .. code-block:: python

        z = thing(y)

    .. note:: The note text stays in the corpus.

    Args:
        size (int): The size of the window used by the method.
    '''
    import inspect
    sentences = corpus._prose_sentences(inspect.cleandoc(doc), set())
    assert sentences == ["Compute the thing for an array.",
                         "This function computes the numpy.thing of x, see the docs.",
                         "It is fast and works well on large inputs.",
                         "The input values to be processed by the function.",
                         "The note text stays in the corpus.",
                         "The size of the window used by the method."]


def test_default_corpus(tmp_path):
    """The real build (about 30 s on this machine's 2 cores), then the cached read."""
    docs, info = corpus.default_corpus(str(tmp_path))
    assert set(info["sources"]) == {"python_docs", "stdlib", "torch", "numpy"}
    assert info["documents"] == len(docs) > 1000 and info["words"] > 400_000
    assert info["sentences"] == sum(map(len, docs)) and all(len(d) >= 2 for d in docs)
    assert sum(s["words"] for s in info["sources"].values()) == info["words"]
    assert os.path.isfile(info["path"]) and info["fingerprint"] in info["path"]
    sentences = [s for d in docs for s in d]
    markup = (">>>", "http://", "https://", ":func:`", "``")
    assert not any(m in s for s in sentences for m in markup) and not any(s.startswith(".. ") for s in sentences)
    assert all(len(s.split()) >= 4 for s in sentences)
    with open(info["path"], encoding="utf-8") as f:  # BERT's pretraining format: a blank line between documents
        assert f.read().count("\n\n") == len(docs) - 1
    assert corpus.read_documents([info["path"]]) == docs  # and the corpus reader reads it back as it was
    again, info2 = corpus.default_corpus(str(tmp_path))
    assert again == docs and info2["path"] == info["path"]
