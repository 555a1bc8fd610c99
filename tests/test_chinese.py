"""Chinese text from corpus to vocabulary: sentence splitting, format detection, a bert-base-chinese style
vocabulary, and tokenizer parity with transformers on a Chinese vocabulary. The text is made here from
common words (the tests never read ../shared)."""

import json
import os

import numpy as np
import pytest

import corpus
import token_cache
from cli import DataError
from tokenization import BertTokenizer, train_wordpiece_vocab

WORDS = ("我们 中国 人民 经济 发展 今天 北京 政府 工作 世界 国家 社会 问题 企业 建设 改革 开放 时间 学生 老师 "
         "城市 农村 科学 技术 文化 历史 重要 继续 已经 进行 提高 生活 朋友 新年 希望 未来 环境 保护 合作 "
         "市场 银行 公司 医院 学校 电脑 网络 大家 觉得 认为 可以 应该 非常 特别 一起 研究 计划 增长 水平").split()
FUNCTION = list("的了在是和也都就把被对向从为")
PUNCT_END = ["。", "！", "？", "；"]


def zh_sentence(rng, english=False) -> str:
    parts = [rng.choice(WORDS) + (rng.choice(FUNCTION) if rng.random() < 0.5 else "") for _ in range(rng.integers(3, 9))]
    if english:
        parts.insert(int(rng.integers(0, len(parts))), rng.choice(["CPU", "Internet", "WTO", "GDP", "ISO 9000"]))
    body = "，".join("".join(parts[i:i + 3]) for i in range(0, len(parts), 3))
    return body + str(rng.choice(PUNCT_END, p=[0.85, 0.05, 0.05, 0.05]))


def zh_paragraph(rng) -> str:
    return "".join(zh_sentence(rng, english=rng.random() < 0.1) for _ in range(rng.integers(1, 6)))


def test_split_chinese_and_japanese_sentences():
    text = "他说：“我们走吧。”然后离开了！你呢？好的；再见……Mixed English here. Then more! 最后一句"
    assert corpus.split_sentences(text) == ["他说：“我们走吧。”", "然后离开了！", "你呢？", "好的；", "再见……",
                                            "Mixed English here.", "Then more!", "最后一句"]
    # closing brackets and quotes stay with their sentence; half-width ｡ and ASCII ! ? next to CJK text
    assert corpus.split_sentences("（附图片１张。）下一句「引用！」又一句『书名？』完｡尾句!结束?") == [
        "（附图片１张。）", "下一句「引用！」", "又一句『书名？』", "完｡", "尾句!", "结束?"]
    assert corpus.split_sentences("日本語の文です。次の文！ＦＵＬＬ？ok") == ["日本語の文です。", "次の文！", "ＦＵＬＬ？", "ok"]
    # a 3,000-character passage is many sentences, not one
    rng = np.random.default_rng(0)
    passage = "".join(zh_sentence(rng) for _ in range(200))
    assert len(passage) > 3000 and len(corpus.split_sentences(passage)) == 200
    # English is split exactly as before: an ellipsis or ! ? between Latin words does not end a sentence
    assert corpus.split_sentences("Wait… what?! Fine. Yes… He left.") == ["Wait… what?!", "Fine.", "Yes… He left."]


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_bert_format_with_chinese_sentences_is_recognised(tmp_path):
    rng = np.random.default_rng(1)
    docs = [[zh_sentence(rng) for _ in range(rng.integers(2, 6))] for _ in range(20)]
    path = write(tmp_path / "zh_bert.txt", "\n\n".join("\n".join(d) for d in docs) + "\n")
    assert next(corpus.file_chunks(path)).fmt == "bert"
    assert corpus.read_documents([path]) == docs


def test_a_paragraph_per_line_becomes_documents_of_neighbouring_paragraphs(tmp_path):
    rng = np.random.default_rng(2)
    paragraphs = [zh_paragraph(rng) for _ in range(95)]
    titles = {7: "中共中央总书记、国家主席江泽民", 30: "（一九九七年十二月三十一日）"}  # lines without a final 。
    lines = [titles.get(i, p) for i, p in enumerate(paragraphs)]
    path = write(tmp_path / "pd.txt", "\n".join(lines) + "\n")
    assert next(corpus.file_chunks(path)).fmt == "paragraphs"
    docs = corpus.read_documents([path])
    n = corpus.PARAGRAPHS_PER_DOCUMENT
    assert len(docs) == 10  # 95 paragraphs: 9 of 10, and the last 5
    for k, doc in enumerate(docs):
        assert doc == [s for line in lines[k * n:(k + 1) * n] for s in corpus.split_sentences(line)]
    # JSONL documents go through the same splitter
    jsonl = write(tmp_path / "zh.jsonl", "".join(json.dumps({"text": "\n".join(lines[i:i + 4])}, ensure_ascii=False)
                                                 + "\n" for i in range(0, 20, 4)))
    assert corpus.read_documents([jsonl])[0] == [s for line in lines[:4] for s in corpus.split_sentences(line)]


def test_text_without_sentence_punctuation_is_refused_with_the_reason(tmp_path):
    rng = np.random.default_rng(3)
    blocks = ["".join(rng.choice(WORDS, 600)) for _ in range(3)]  # 1,200+ characters, no 。！？
    path = write(tmp_path / "nopunct.txt", "\n\n".join(blocks) + "\n")
    vocab = str(tmp_path / "vocab.txt")
    train_wordpiece_vocab(blocks, 500, vocab)
    with pytest.raises(DataError, match=r"nopunct.txt: 100% of the text is in 'sentences' of over 1,000 characters: "
                                        r"it has no sentence punctuation"):
        token_cache.prepare_corpus([path], BertTokenizer(vocab), str(tmp_path / "cache"), workers=1, progress=False)
    assert not [n for n in os.listdir(tmp_path / "cache") if n.startswith(("corpus-", ".tmp"))]


@pytest.fixture(scope="module")
def zh_vocabs(tmp_path_factory):
    rng = np.random.default_rng(4)
    texts = [zh_paragraph(rng) for _ in range(600)] + ["ＦＵＬＬＷＩＤＴＨ １２３４５ ｆｕｌｌ", "Ｉｎｔｅｒｎｅｔ ＣＰＵ"] * 3
    out = {}
    for lower in (True, False):
        path = str(tmp_path_factory.mktemp(f"zh{lower}") / "vocab.txt")
        out[lower] = (train_wordpiece_vocab(texts, 2000, path, do_lower_case=lower), path)
    return out


def test_chinese_vocabulary_is_characters_plus_english_pieces(zh_vocabs):
    vocab, path = zh_vocabs[True]
    cjk = [t for t in vocab if len(t) == 1 and "\u4e00" <= t <= "\u9fff"]
    assert set("".join(WORDS + FUNCTION)) <= set(cjk)  # every character seen, as a token of its own
    assert not [t for t in vocab if t.startswith("##") and "\u4e00" <= t[2:3] <= "\u9fff"]  # never '##中'
    tok = BertTokenizer(path)  # the English words of the mixed text are whole tokens
    assert tok.tokenize("Internet CPU GDP WTO ISO 9000") == ["internet", "cpu", "gdp", "wto", "iso", "9000"]
    rng = np.random.default_rng(5)  # held-out text of the same words: no [UNK]
    tok = BertTokenizer(path)
    held_out = [zh_paragraph(rng) for _ in range(50)]
    ids = [i for p in held_out for i in tok.tokenize_to_ids(p)]
    assert tok.unk_token_id not in ids and len(ids) > 2000
    # a vocabulary too small for every character keeps the most frequent ones
    small = train_wordpiece_vocab(["的的的的 我我我 你"] * 3, 5 + 2 * (94 - 26) + 2, path + ".small")  # uncased ASCII + 2
    assert "的" in small and "我" in small and "你" not in small


TEXTS = ["我们今天在北京开会。", "１２月３１日，ＣＰＵ和Internet都很重要！", "他说：“走吧。”（附图片１张）",
         "ＦＵＬＬＷＩＤＴＨ ｆｕｌｌ Ａｂｃ", "中文English混合text，数字2023年。", "日本語とかな、한국어도。", "　全角空格　"]


@pytest.mark.parametrize("lower", [True, False])
def test_tokenizer_matches_transformers_on_chinese(zh_vocabs, lower):
    transformers = pytest.importorskip("transformers")
    _, path = zh_vocabs[lower]
    ours = BertTokenizer(path, do_lower_case=lower)
    slow = transformers.BertTokenizerLegacy(vocab_file=path, do_lower_case=lower)
    fast = transformers.BertTokenizer(vocab=path, do_lower_case=lower)
    rng = np.random.default_rng(6)
    for text in TEXTS + [zh_paragraph(rng) for _ in range(30)]:
        assert ours.tokenize(text) == slow.tokenize(text), text
        assert ours.encode(text)["input_ids"] == slow(text)["input_ids"] == fast(text)["input_ids"], text


def test_pretraining_on_a_chinese_corpus_end_to_end(tmp_path, capsys):
    """A file with a paragraph per line, as Chinese corpora come: it trains, and TensorBoard's MLM probes
    are Chinese sentences of the corpus (the English ones would be all [UNK])."""
    import train_mlm
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    rng = np.random.default_rng(7)
    path = write(tmp_path / "zh.txt", "\n".join(zh_paragraph(rng) for _ in range(400)) + "\n")
    argv = ["--data", path, "--config", "tiny", "--hidden", "32", "--heads", "2", "--seq-len", "32",
            "--batch-size", "8", "--steps", "6", "--eval-interval", "6", "--eval-batches", "2",
            "--viz-interval", "6", "--vocab-size", "600", "--cache-dir", str(tmp_path / "cache"),
            "--out-dir", str(tmp_path / "runs"), "--run-name", "zh", "--no-progress"]
    assert train_mlm.main(argv) == 0
    out = capsys.readouterr().out
    assert "data: 40 documents" in out and "MLM accuracy" in out
    ea = EventAccumulator(str(tmp_path / "runs" / "zh"), size_guidance={"tensors": 0})
    ea.Reload()
    table = ea.Tensors("MLM/predictions/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert "[MASK]" in table and any("\u4e00" <= c <= "\u9fff" for c in table) and "[UNK]" not in table.split("|")[1]


def test_too_few_documents_says_what_a_document_is(tmp_path, capsys):
    import train_mlm
    path = write(tmp_path / "one.txt", "第一句话。第二句话。\n\n")  # prose: one document
    argv = ["--data", path, "--vocab-size", "300", "--cache-dir", str(tmp_path / "cache"), "--out-dir",
            str(tmp_path / "runs"), "--no-progress"]
    assert train_mlm.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "too few documents (1)" in err[-1]
    assert "10 lines of a file with a paragraph per line" in err[-1] and "blank lines" in err[-1]
