"""data.BertTokenizer and data.train_wordpiece_vocab against transformers (the reference oracle)."""

import os

import pytest
import transformers

import data

PARAGRAPHS = [
    "The quick brown fox jumps over the lazy dog. It was not amused by the fox's antics.",
    "Tokenization splits text into words, punctuation and sub-word pieces; rare words become several pieces.",
    "In 1999, the museum opened a new wing dedicated to modern art, sculpture and photography.",
    "She said: \"We'll meet at 3.14 p.m. near the station, won't we?\" He nodded and smiled.",
    "Researchers measured the temperature of the lake every morning for three consecutive years.",
    "A café in the old town serves croissants, espresso and a surprisingly good crème brûlée.",
    "The committee approved the budget of $1,000,000 after a long and sometimes heated debate.",
    "Computers process instructions quickly, but programmers still spend hours reading error messages.",
    "Rivers carry sediment downstream, slowly building deltas where they meet the sea.",
    "The orchestra rehearsed the symphony twice before the premiere on Saturday evening.",
    "Learning a language requires patience, practice and a willingness to make mistakes.",
    "Ångström units measure very small distances, such as the spacing between atoms in a crystal.",
    "The naïve approach works for small inputs, but it becomes slow when the data grows.",
    "Mountains in the north receive heavy snowfall, while the southern valleys stay dry.",
    "Their presentation covered networks, databases, compilers, and operating systems in detail.",
    "Jumping, running, and swimming are the three events of the junior championship.",
    "Unbelievably, the unbreakable record was broken again by the youngest participant.",
    "Machine learning models learn patterns from examples rather than from explicit rules.",
]

VARIED_TEXTS = [
    "Hello, world!", "café naïve Ångström Crème BRÛLÉE",
    "中文字符 and 日本語 with 한국어", "emoji 😀 👍🏽 and symbols © ® ™ € £", "ctrl\x00chars\x07here\x1b and \ufffd",
    "tabs\tand\nnewlines\r\nand\u00a0nbsp\u2003em-space", "!!!...??", "3.14 1,000 10^6 $5 50% #1 @home `tick` ~x",
    "x" * 150, "supercalifragilisticexpialidocious" * 3, "", "   ", "\t\n", "The quick brown fox.",
    "[CLS] [SEP] [MASK] [PAD] [UNK]", "a[MASK]b [mask] [ MASK ] [MASK][SEP]", "Unbelievably unbreakable jumping",
    "don't won't it's O'Neil", "hyphen-ated words—em dash–en dash", "«quotes» „German“ ‘single’",
    "Ünïcödé ÀÉÎÕÜ ǅ İstanbul ß straße", "math: ∑ ∫ √ ≤ ≥ ≠ ∞", "ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ", "zero\u200bwidth",
]

# where transformers' Rust tokenizer can depart from its Python one: it skips the NFC step, and cleans
# the text only after looking for special tokens
PYTHON_ONLY_TEXTS = ["e\u0301te\u0301 decomposed", "x\u0300y", "[MA\x00SK] x", "\u2028line\u2029sep\x85x",
                     "İstanbul ﬁne"]

HAND_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", "the", "quick", "brown", "fox", "un",
              "##believ", "##ably", "##break", "##able", "jump", "##ing", "##s", "hello", ",", "world", "!", ".",
              "?", "'", "t", "##e", "x", "##x", "café", "cafe", "naive", "é", "中", "文", "3", "14", "1", "000", "$",
              "5", "a", "b", "c", "##a", "##b", "##c", "don", "it", "s", "[", "]", "mask", "Hello", "The"]


def write_vocab(folder, tokens):
    path = os.path.join(folder, "vocab.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(t + "\n" for t in tokens))
    return path


@pytest.fixture(scope="module")
def trained_vocabs(tmp_path_factory):
    """A trained vocabulary per casing, plus the hand-written one."""
    out = {}
    for lower in (True, False):
        folder = tmp_path_factory.mktemp(f"vocab_lower{lower}")
        path = os.path.join(folder, "vocab.txt")
        data.train_wordpiece_vocab(PARAGRAPHS * 3, 400, path, do_lower_case=lower)
        out[lower] = path
    out["hand"] = write_vocab(tmp_path_factory.mktemp("hand"), HAND_VOCAB)
    return out


def oracles(path, lower):
    slow = transformers.BertTokenizerLegacy(vocab_file=path, do_lower_case=lower)  # Python port of Google's code
    fast = transformers.BertTokenizer(vocab=path, do_lower_case=lower)  # note: v5 ignores vocab_file=
    return slow, fast


@pytest.mark.parametrize("lower", [True, False])
@pytest.mark.parametrize("which", ["trained", "hand"])
def test_tokenize_matches_transformers(trained_vocabs, lower, which):
    path = trained_vocabs[lower] if which == "trained" else trained_vocabs["hand"]
    ours = data.BertTokenizer(path, do_lower_case=lower)
    slow, fast = oracles(path, lower)
    for text in VARIED_TEXTS + PARAGRAPHS + PYTHON_ONLY_TEXTS:
        expected = slow.tokenize(text)
        assert ours.tokenize(text) == expected, text
        assert ours.convert_tokens_to_ids(expected) == slow.convert_tokens_to_ids(expected)
        assert ours.encode(text)["input_ids"] == slow(text)["input_ids"], text
        if text not in PYTHON_ONLY_TEXTS:
            assert ours.encode(text)["input_ids"] == fast(text)["input_ids"], text


@pytest.mark.parametrize("lower", [True, False])
def test_encode_pairs_with_truncation_match_transformers(trained_vocabs, lower):
    path = trained_vocabs[lower]
    ours = data.BertTokenizer(path, do_lower_case=lower)
    slow, fast = oracles(path, lower)
    pairs = [(PARAGRAPHS[0], PARAGRAPHS[1]), (PARAGRAPHS[1], "short"), ("short", PARAGRAPHS[2]),
             ("a b c d", "e f g h"), (PARAGRAPHS[3], PARAGRAPHS[3]), ("", PARAGRAPHS[4]), ("", ""),
             (PARAGRAPHS[5], None), ("", None)]
    for max_length in (3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 16, 17, 31, 32, 64, 512):
        for a, b in pairs:
            if b is None and max_length < 2:
                continue
            got = ours.encode(a, b, max_length=max_length)
            want = slow(a, b, truncation=True, max_length=max_length, return_token_type_ids=True,
                        return_attention_mask=True)
            for key in ("input_ids", "token_type_ids", "attention_mask"):
                assert got[key] == want[key], (a, b, max_length, key)
            assert len(got["input_ids"]) <= max_length
            if max_length >= 8 and a and b:  # the Rust tokenizer breaks length ties the other way
                assert len(got["input_ids"]) == len(fast(a, b, truncation=True, max_length=max_length)["input_ids"])
    with pytest.raises(ValueError):
        ours.encode("a", "b", max_length=2)


def test_special_tokens_in_text_stay_whole(trained_vocabs):
    tok = data.BertTokenizer(trained_vocabs[True])
    assert tok.tokenize("a[MASK]b [SEP]") == ["a", "[MASK]", "b", "[SEP]"]
    lower = tok.tokenize("[mask]")  # only the exact spelling is special
    assert lower[0] == "[" and lower[-1] == "]" and "[MASK]" not in lower


def test_decode(trained_vocabs):
    for lower in (True, False):
        tok = data.BertTokenizer(trained_vocabs[lower], do_lower_case=lower)
        slow, _ = oracles(trained_vocabs[lower], lower)
        for text in PARAGRAPHS + ["", "Unbelievably unbreakable"]:
            ids = tok.encode(text, "second part.")["input_ids"]
            for skip in (True, False):
                assert tok.decode(ids, skip_special_tokens=skip) == slow.decode(
                    ids, skip_special_tokens=skip, clean_up_tokenization_spaces=False)
    tok = data.BertTokenizer(trained_vocabs[True])
    assert tok.decode(tok.encode("the quick brown fox jumps")["input_ids"]) == "the quick brown fox jumps"


def test_tokenizer_attributes(trained_vocabs):
    tok = data.BertTokenizer(trained_vocabs[True])
    ids = (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id)
    assert ids == (0, 1, 2, 3, 4)
    assert len(tok) == len(tok.vocab) == len(tok.ids_to_tokens) == 400
    assert tok.do_lower_case
    assert tok.convert_ids_to_tokens(tok.convert_tokens_to_ids(["[CLS]", "the"])) == ["[CLS]", "the"]
    assert tok.convert_tokens_to_ids(["no-such-token"]) == [tok.unk_token_id]
    assert tok.tokenize("x" * 101) == ["[UNK]"]


def test_bad_vocab_files(tmp_path):
    with pytest.raises(data.DataError, match="missing.txt: no such file"):
        data.BertTokenizer(str(tmp_path / "missing.txt"))
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(data.DataError, match="empty.txt: file is empty"):
        data.BertTokenizer(str(empty))
    lacking = tmp_path / "lacking.txt"
    lacking.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n")
    with pytest.raises(data.DataError, match=r"lacking.txt: .*\[MASK\]") as e:
        data.BertTokenizer(str(lacking))
    assert "\n" not in str(e.value)


def test_train_vocab(tmp_path, trained_vocabs):
    path = str(tmp_path / "out" / "vocab.txt")
    vocab = data.train_wordpiece_vocab(PARAGRAPHS * 2, 300, path)
    assert len(vocab) == 300 and len(set(vocab)) == 300
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    with open(path, encoding="utf-8") as f:
        assert f.read().splitlines() == vocab
    assert all(t == t.lower() for t in vocab[5:])
    chars = {c for t in vocab[5:] if len(t) == 1 for c in t}
    assert {"q", "z", ".", "<"} <= chars and {"##q", "##z"} <= set(vocab) and "é" not in chars  # accents stripped
    # learned pieces follow the characters and are made of them
    assert any(len(t.removeprefix("##")) > 3 for t in vocab)
    assert data.train_wordpiece_vocab(PARAGRAPHS * 2, 300, path) == vocab  # deterministic
    # transformers loads it; held-out text of the same letters tokenises without [UNK]
    slow, fast = oracles(trained_vocabs[True], True)
    held_out = "The young researcher learned quickly, measuring the river and the mountains."
    assert "[UNK]" not in slow.tokenize(held_out)
    assert slow.tokenize(held_out) == data.BertTokenizer(trained_vocabs[True]).tokenize(held_out)
    assert fast(held_out)["input_ids"] == slow(held_out)["input_ids"]
    assert len(fast) == 400
    # min_frequency caps the vocabulary: pairs seen once are never merged
    small = data.train_wordpiece_vocab(["abcdefgh"], 1000, path, min_frequency=2)
    assert len(small) == 5 + 2 * len({chr(i) for i in range(33, 127)} | set("abcdefgh")) - 2 * 26
    with pytest.raises(ValueError):
        data.train_wordpiece_vocab(PARAGRAPHS, 20, path)


def test_train_vocab_cased_keeps_case(trained_vocabs):
    with open(trained_vocabs[False], encoding="utf-8") as f:
        vocab = f.read().splitlines()
    assert "T" in vocab and "Å" in vocab


def test_tokenizer_speed(trained_vocabs):
    """A loose floor (the report measures ~1M tokens/s); catches an accidental loss of the word cache."""
    import time
    tok = data.BertTokenizer(trained_vocabs[True])
    texts = PARAGRAPHS * 300
    t0 = time.perf_counter()
    n = sum(len(tok.tokenize_to_ids(t)) for t in texts)
    assert n / (time.perf_counter() - t0) > 100_000
