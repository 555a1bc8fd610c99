"""The data path: tokenizer tokens/s and pretraining batch creation (pairs + masking + collate) in
sequences/s, set against how fast the model eats them. The data path must never be the bottleneck:
`headroom_*` is data sequences/s over model sequences/s and has to stay well above 1."""

import time

import torch

import data
from bench_common import best, pretraining_batch, supports_bf16
from model import BertConfig
from test_pretraining import make_model, make_optimizer, train_step

BATCH, SEQ, PREDICTIONS = 32, 128, 20
BATCHES_PER_ROUND = 10


def test_tokenizer(benchmark, corpus):
    """A fresh tokenizer per round: its word cache starts empty, as when a corpus is tokenised once."""
    documents, tokenizer = corpus
    sentences = [s for d in documents for s in d]
    fresh = {}

    def setup():
        fresh["tok"] = data.BertTokenizer(tokenizer.vocab_file, do_lower_case=True)

    def run():
        return sum(len(fresh["tok"].tokenize_to_ids(s)) for s in sentences)

    benchmark.group = "data"
    tokens = benchmark.pedantic(run, setup=setup, rounds=5, warmup_rounds=1)
    seconds = best(benchmark)
    if seconds is not None:
        benchmark.extra_info.update(what="tokenizer (cold cache)", tokens_per_s=tokens / seconds,
                                    words_per_s=sum(len(s.split()) for s in sentences) / seconds)


def model_sequences_per_s(preset: str, device: str) -> float:
    """How fast our model trains at its best settings: the rate the data path has to keep up with."""
    config = BertConfig.from_preset(preset, vocab_size=8192)
    model = make_model("ours", config, device)
    step = train_step(model, make_optimizer("ours", model, device),
                      pretraining_batch(BATCH, SEQ, PREDICTIONS, config.vocab_size, device),
                      "bf16" if supports_bf16(device) else "fp32", device)
    step()  # warmup
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return BATCH / min(times)


def test_pretraining_batches(benchmark, corpus, tmp_path):
    documents, tokenizer = corpus
    tokens = data.tokenize_corpus(documents, tokenizer, str(tmp_path))
    pretraining = data.PretrainingData(tokens, tokenizer, max_seq_length=SEQ, max_predictions_per_seq=PREDICTIONS)

    def run():
        for _ in range(BATCHES_PER_ROUND):
            batch = pretraining.next_batch(BATCH)
        return batch

    benchmark.group = "data"
    batch = benchmark.pedantic(run, rounds=5, warmup_rounds=1)  # instances are made on the fly, timed too
    assert batch["input_ids"].shape == (BATCH, SEQ)
    seconds = best(benchmark)
    if seconds is None:
        return
    rate = BATCH * BATCHES_PER_ROUND / seconds
    info = dict(what="pretraining batches (pairs + masking + collate)", sequences_per_s=rate,
                tokens_per_s=rate * SEQ)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        for preset in ("tiny", "mini"):
            info[f"headroom_vs_{preset}_{device}"] = rate / model_sequences_per_s(preset, device)
    benchmark.extra_info.update(info)
