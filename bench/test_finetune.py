"""Sentence classification on short, varied sentences like SST-2's: a training epoch in samples/s and
inference in sentences/s, with three ways to batch them:
- padded128: every batch padded to 128, as a fixed-shape pipeline does;
- dynamic: each batch padded to its own longest sentence (data.classification_batches);
- bucketed: sentences of similar length batched together first, so there is little padding at all.
"""

import functools
import random

import pytest
import torch
import torch.nn.functional as F

import data
from bench_common import alternated, best, smoke_only
from model import BertConfig, BertForSequenceClassification

BATCH, MAX_LEN, EXAMPLES = 32, 128, 128
BUCKETS = {"padded128": None, "dynamic": None, "bucketed": 100}


@pytest.fixture(scope="module")
def encoded(corpus):
    """SST-2's sentences run from a couple of words to about 50, most of them short: corpus sentences
    cut to 4, 8, 12, 16, 24 or 50 words at random (shorter when the sentence is), random labels."""
    documents, tokenizer = corpus
    rng = random.Random(0)
    sentences = [s for d in documents for s in d if 2 <= len(s.split()) <= 50]
    sentences = rng.sample(sentences, EXAMPLES)
    sentences = [" ".join(s.split()[:rng.choice([4, 8, 12, 16, 24, 50])]) for s in sentences]
    examples = [data.ClassificationExample(s, None, rng.choice("01"), n) for n, s in enumerate(sentences)]
    return data.encode_classification(examples, tokenizer, data.LabelMap(["0", "1"]), max_length=MAX_LEN), tokenizer


def batches(encoded, tokenizer, padding):
    for batch in data.classification_batches(encoded, BATCH, tokenizer.pad_token_id, shuffle=True, seed=0,
                                             bucket_size=BUCKETS[padding]):
        if padding == "padded128":
            extra = MAX_LEN - batch["input_ids"].size(1)
            batch = {k: F.pad(v, (0, extra), value=tokenizer.pad_token_id if k == "input_ids" else 0)
                     if v.dim() == 2 else v for k, v in batch.items()}
        yield batch


@pytest.mark.parametrize("mode", ["train", "inference"])
@pytest.mark.parametrize("padding", list(BUCKETS))  # padded128 first: the others record their speedup over it
def test_classification(benchmark, request, measured, encoded, padding, mode):
    if padding == "padded128":
        smoke_only(request, "padding to 128")
    encoded, tokenizer = encoded
    if not benchmark.enabled:  # the smoke run only checks that the code works: two batches do
        encoded = encoded[:2 * BATCH]
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig.from_preset("mini", vocab_size=len(tokenizer)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, fused=True)

    def train_epoch():
        model.train()
        for batch in batches(encoded, tokenizer, padding):
            loss, _ = model(**batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    @torch.inference_mode()
    def predict_all():
        model.eval()
        for batch in batches(encoded, tokenizer, padding):
            model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])

    benchmark.group = "finetune"
    benchmark.pedantic(train_epoch if mode == "train" else predict_all, rounds=3, warmup_rounds=1)
    seconds = best(benchmark)
    if seconds is None:
        return
    lengths = [len(e["input_ids"]) for e in encoded]
    padded = sum(b["input_ids"].numel() for b in batches(encoded, tokenizer, padding))
    info = dict(mode=mode, padding=padding, preset="mini", samples_per_s=len(encoded) / seconds,
                mean_length=sum(lengths) / len(lengths), padding_fraction=1 - sum(lengths) / padded)
    if padding == "padded128":
        measured[("finetune", mode)] = seconds
    elif ("finetune", mode) in measured:
        info["speedup_vs_padded128"] = measured[("finetune", mode)] / seconds
    benchmark.extra_info.update(info)


def test_token_classification(benchmark, encoded):
    """A training epoch of token classification (a label per piece, as finetune_ner.py trains), mini, batch 32,
    the same bucketed batches and weights for transformers' BertForTokenClassification and ours. Each round
    trains an epoch with each, one after the other, so that a shared machine's drift slows both alike; the
    speedup is the ratio of their medians."""
    transformers = pytest.importorskip("transformers")
    from model import BertForTokenClassification
    encoded, tokenizer = encoded
    if not benchmark.enabled:
        encoded = encoded[:2 * BATCH]
    rng = random.Random(1)
    tagged = [dict(e, label=[-100] + [rng.randrange(9) for _ in e["input_ids"][2:]] + [-100]) for e in encoded]
    torch.manual_seed(0)
    config = BertConfig.from_preset("mini", vocab_size=len(tokenizer), num_labels=9)
    ours = BertForTokenClassification(config)
    hf = transformers.BertForTokenClassification(transformers.BertConfig(**config.to_hf_dict(), attn_implementation="sdpa"))
    hf.load_state_dict({k: v for k, v in ours.state_dict().items() if "pooler" not in k}, strict=False)
    forwards = {"transformers": (hf, lambda batch: hf(**batch).loss), "ours": (ours, lambda batch: ours(**batch)[0])}

    def train_epoch(model, forward, optimizer):
        model.train()
        for batch in data.classification_batches(tagged, BATCH, tokenizer.pad_token_id, shuffle=True, seed=0,
                                                 bucket_size=100):
            forward(batch).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    epochs = {name: functools.partial(train_epoch, model, forward, torch.optim.AdamW(model.parameters(), lr=2e-5,
                                                                                    fused=True))
              for name, (model, forward) in forwards.items()}
    benchmark.group = "finetune"
    median = alternated(benchmark, epochs, rounds=5, warmup_rounds=1)
    if median is None:
        return
    benchmark.extra_info.update(mode="train", padding="token-classification", preset="mini",
                                samples_per_s=len(tagged) / median["ours"],
                                transformers_samples_per_s=len(tagged) / median["transformers"],
                                speedup_vs_transformers=median["transformers"] / median["ours"])
