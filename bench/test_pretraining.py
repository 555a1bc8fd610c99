"""One full pretraining step (forward, backward, AdamW) in tokens/s, against transformers.

Batch 32 x 128 tokens, 20 masked-LM slots, some padding, the NSP head, dropout on. Ours runs with its
best settings (masked-position MLM head, SDPA, fused AdamW); transformers' BertForPreTraining runs as a
user would write it (default attention, labels with -100 at unmasked positions, default AdamW), from
the identical config. Each of our cases runs right after the matching transformers case and records
the speed ratio; MFU counts the useful FLOPs (the MLM decoder at the masked positions only) against
the matmul peak measured on this machine.
"""

import time

import pytest
import torch

from bench_common import (DEVICES, alternated, best, hf_pretraining_batch, peak_flops, pretraining_batch,
                          smoke_only, supports_bf16, sync)
import model as model_module
from model import BertConfig, BertForPreTraining, pretraining_flops_per_sequence

BATCH, SEQ, PREDICTIONS = 32, 128, 20
ROUNDS = {"tiny": 5, "mini": 3, "small": 2, "base": 5}  # base runs on GPUs, where a step is short


def make_model(impl: str, config: BertConfig, device: str):
    if impl == "ours":
        return BertForPreTraining(config).to(device).train()
    transformers = pytest.importorskip("transformers", reason="transformers is the reference; not installed")
    return transformers.BertForPreTraining(transformers.BertConfig(**config.to_hf_dict())).to(device).train()


def make_optimizer(impl: str, model, device: str):
    if impl == "ours":  # one fused kernel over all parameters instead of a loop of small ops
        return torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    return torch.optim.AdamW(model.parameters(), lr=1e-4)


def train_step(model, optimizer, batch, precision, device, phases=None):
    """A step; with phases (a dict of lists) it also records where the time goes. That costs two
    clock reads on CPU; on CUDA it would need syncs that change what is measured, so it is CPU only."""
    def step():
        t0 = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(**batch).loss
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        if phases is not None:
            for name, seconds in zip(("forward", "backward", "optimizer"), (t1 - t0, t2 - t1, time.perf_counter() - t2)):
                phases[name].append(seconds)
    return step


CASES = [(preset, vocab, precision, impl)
         for preset in ("tiny", "mini", "small", "base")
         for vocab in (30522, 8192)
         for precision in ("fp32", "bf16")
         for impl in ("hf", "ours")]  # ours right after the reference it is compared with


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("preset,vocab,precision,impl", CASES, ids=["-".join(map(str, c)) for c in CASES])
def test_pretraining_step(benchmark, request, measured, large, preset, vocab, precision, impl, device):
    if preset == "base" and device == "cpu" and not large:
        pytest.skip("base on CPU takes minutes per case: --bench-large")
    if precision == "bf16" and not supports_bf16(device):
        pytest.skip(f"no bf16 on this {device}")
    if preset != "tiny" or vocab != 8192:
        smoke_only(request, "presets above tiny and vocab 30522")
    config = BertConfig.from_preset(preset, vocab_size=vocab)
    torch.manual_seed(0)
    model = make_model(impl, config, device)
    optimizer = make_optimizer(impl, model, device)
    batch = pretraining_batch(BATCH, SEQ, PREDICTIONS, vocab, device)
    if impl == "hf":
        batch = hf_pretraining_batch(batch)
    phases = {"forward": [], "backward": [], "optimizer": []} if device == "cpu" else None

    benchmark.group = "pretraining"
    benchmark.pedantic(train_step(model, optimizer, batch, precision, device, phases),
                       rounds=ROUNDS[preset], warmup_rounds=1)
    seconds = best(benchmark)
    if seconds is None:
        return
    flops = pretraining_flops_per_sequence(config, SEQ, PREDICTIONS) * BATCH
    key = ("pretraining", device, preset, vocab, precision)
    peak = peak_flops(device, precision)
    info = dict(device=device, preset=preset, vocab=vocab, precision=precision, impl=impl,
                tokens_per_s=BATCH * SEQ / seconds, mfu=flops / seconds / peak, peak_tflops=peak / 1e12)
    if phases:
        info.update({f"{name}_ms": 1e3 * min(times) for name, times in phases.items()})
    if impl == "hf":
        measured[key] = seconds
    elif key in measured:
        info["speedup_vs_hf"] = measured[key] / seconds
    benchmark.extra_info.update(info)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["default", "fused"])
def test_adamw_step(benchmark, kind, device):
    """The optimizer alone, on the parameters of mini/30522: the default (foreach) AdamW against
    the fused kernel."""
    model = BertForPreTraining(BertConfig.from_preset("mini")).to(device)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=kind == "fused" or None)

    def step():
        optimizer.step()
        sync(device)

    benchmark.group = "adamw"
    benchmark.pedantic(step, rounds=20, warmup_rounds=2)
    seconds = best(benchmark)
    if seconds is not None:
        benchmark.extra_info.update(device=device, kind=kind, ms=1e3 * seconds)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_pretraining_step_compiled(benchmark, measured, large, precision, device):
    """Our mini/30522 step again with torch.compile on the model. Compiling takes minutes on a small
    CPU, so only with --bench-large; the ratio is against the transformers case of the same run."""
    if not large:
        pytest.skip("torch.compile takes minutes to compile: --bench-large")
    if precision == "bf16" and not supports_bf16(device):
        pytest.skip(f"no bf16 on this {device}")
    config = BertConfig.from_preset("mini", vocab_size=30522)
    torch.manual_seed(0)
    model = make_model("ours", config, device)
    optimizer = make_optimizer("ours", model, device)
    step = train_step(torch.compile(model), optimizer, pretraining_batch(BATCH, SEQ, PREDICTIONS, 30522, device),
                      precision, device)
    step()  # compiles: not part of the timing

    benchmark.group = "pretraining-compiled"
    benchmark.pedantic(step, rounds=ROUNDS["mini"], warmup_rounds=1)
    seconds = best(benchmark)
    if seconds is None:
        return
    info = dict(device=device, preset="mini", vocab=30522, precision=precision, impl="ours+compile",
                tokens_per_s=BATCH * SEQ / seconds,
                mfu=pretraining_flops_per_sequence(config, SEQ, PREDICTIONS) * BATCH / seconds
                / peak_flops(device, precision))
    key = ("pretraining", device, "mini", 30522, precision)
    if key in measured:
        info["speedup_vs_hf"] = measured[key] / seconds
    benchmark.extra_info.update(info)


# The default run's shape (train_mlm.py's defaults: tiny, 8,192-token vocabulary, 48 full rows of 64 tokens, 16
# predictions at 25% masking), under the recipes issue 20 measured, each against the default the issue started
# from: MLM + NSP, dropout 0.1 drawn by torch's own CPU mask (F.dropout, and SDPA's dropout, which on CPU falls
# back to the same explicit steps with torch's mask).
RECIPES = {"MLM + NSP, dropout 0.1, torch's mask (before)": {"dropout": 0.1, "nsp": True, "torch_mask": True},
           "MLM only, dropout 0.1, torch's mask": {"dropout": 0.1, "nsp": False, "torch_mask": True},
           "MLM only, dropout 0.1, model.dropout's mask": {"dropout": 0.1, "nsp": False, "torch_mask": False},
           "MLM only, dropout 0 (the default)": {"dropout": 0.0, "nsp": False, "torch_mask": False},
           "MLM only, dropout 0, blocks of 8 (the --short-context steps)":
               {"dropout": 0.0, "nsp": False, "torch_mask": False, "context": 8},
           "MLM only, dropout 0, bf16 autocast (--precision bf16)":
               {"dropout": 0.0, "nsp": False, "torch_mask": False, "precision": "bf16"},
           "MLM only, dropout 0, batch 16 (a batch-size ramp's first steps)":
               {"dropout": 0.0, "nsp": False, "torch_mask": False, "batch": 16}}
BEFORE = next(iter(RECIPES))
DEFAULT_SHAPE = {"batch": 48, "seq": 64, "predictions": 16, "vocab": 8192}


def recipe_shape(recipe: str) -> dict:
    return {**DEFAULT_SHAPE, "batch": RECIPES[recipe].get("batch", DEFAULT_SHAPE["batch"])}


def recipe_step(recipe: str, device: str):
    """A step of the default pretraining run under `recipe`, as train_mlm.py takes it (fused AdamW)."""
    r, shape = RECIPES[recipe], recipe_shape(recipe)
    config = BertConfig.from_preset("tiny", vocab_size=shape["vocab"], hidden_dropout_prob=r["dropout"],
                                    attention_probs_dropout_prob=r["dropout"])
    torch.manual_seed(0)
    model = make_model("ours", config, device)
    optimizer = make_optimizer("ours", model, device)
    batch = pretraining_batch(shape["batch"], shape["seq"], shape["predictions"], shape["vocab"], device,
                              masked_lm_prob=0.25, full_rows=True)
    if not r["nsp"]:
        batch = {k: v for k, v in batch.items() if k != "next_sentence_labels"}  # as train_mlm.py without --nsp
    if r.get("context"):
        batch["context"] = r["context"]  # the encoder reads blocks (a model argument, passed with the batch)
    step = train_step(model, optimizer, batch, r.get("precision", "fp32"), device)
    if not r["torch_mask"]:
        return step

    def with_torch_mask():
        own, model_module.dropout = model_module.dropout, torch.nn.functional.dropout
        try:
            step()
        finally:
            model_module.dropout = own
    return with_torch_mask


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("recipe", list(RECIPES))
def test_default_recipe_step(benchmark, recipe, device):
    """Each round takes a step of the earlier default, then a step of this recipe, so that a shared machine's
    drift (here +-20% within minutes) slows both alike; the speedup is the ratio of their medians. Dropout off
    draws no random numbers (torch skips the mask at p=0); MLM only drops the NSP loss. The speedup is per
    token, so that a recipe with smaller batches is compared at equal work."""
    benchmark.group = "recipe"
    if RECIPES[recipe].get("precision") == "bf16" and not supports_bf16(device):
        pytest.skip(f"{device} has no bf16")
    median = alternated(benchmark, {"before": recipe_step(BEFORE, device), "recipe": recipe_step(recipe, device)},
                        rounds=30, warmup_rounds=2, device=device)
    if median is None:
        return
    seconds = median["recipe"]
    shape = recipe_shape(recipe)
    config = BertConfig.from_preset("tiny", vocab_size=shape["vocab"])
    flops = pretraining_flops_per_sequence(config, shape["seq"], shape["predictions"]) * shape["batch"]
    tokens_per_s = shape["batch"] * shape["seq"] / seconds
    before_tokens_per_s = DEFAULT_SHAPE["batch"] * DEFAULT_SHAPE["seq"] / median["before"]
    benchmark.extra_info.update(device=device, recipe=recipe, tokens_per_s=tokens_per_s,
                                mfu=flops / seconds / peak_flops(device, RECIPES[recipe].get("precision", "fp32")),
                                speedup_vs_before=tokens_per_s / before_tokens_per_s)
