"""Attention alone: the textbook four steps versus the fused kernel model.py calls.

Batch 8, 4 heads of 64, a key-padding mask, sequence lengths 128..2048; forward, and forward plus
backward. Each case records achieved GFLOP/s and peak memory, and the fused case its speedup over
the naive one measured just before it, so the summary shows how time and memory grow with length.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from bench_common import DEVICES, DTYPES, best, peak_memory, smoke_only, supports_bf16, sync

BATCH, HEADS, HEAD_DIM = 8, 4, 64
LENGTHS = [128, 256, 512, 1024, 2048]
ROUNDS = {128: 20, 256: 10, 512: 5, 1024: 3, 2048: 2}  # fewer rounds as the quadratic cost grows


def naive_attention(q, k, v, mask):
    """What model.py does when asked for the probabilities: every (T, T) intermediate is a tensor."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return scores.softmax(dim=-1) @ v


def sdpa_attention(q, k, v, mask):
    """What model.py does otherwise: one fused call that never materialises all of the scores."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


IMPLS = {"naive": naive_attention, "sdpa": sdpa_attention}


def attention_inputs(T, dtype, device, backward):
    g = torch.Generator().manual_seed(0)
    q, k, v, dy = (torch.randn(BATCH, HEADS, T, HEAD_DIM, generator=g).to(device, DTYPES[dtype]) for _ in range(4))
    lengths = torch.randint(T // 2, T + 1, (BATCH,), generator=g)
    lengths[0] = T
    mask = (torch.arange(T)[None] < lengths[:, None])[:, None, None, :].to(device)  # (B, 1, 1, T), True = attend
    for t in (q, k, v):
        t.requires_grad_(backward)
    return q, k, v, mask, dy


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("T", LENGTHS)
@pytest.mark.parametrize("pass_", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", ["naive", "sdpa"])  # innermost: sdpa is timed right after naive
def test_attention(benchmark, request, measured, large, impl, pass_, T, dtype, device):
    if dtype == "bf16" and device == "cpu":
        pytest.skip("bf16 attention is measured on CUDA only")
    if dtype == "bf16" and not supports_bf16(device):
        pytest.skip(f"no bf16 on this {device}")
    if T == 2048 and device == "cpu" and not large:
        pytest.skip("2048 on CPU: the naive forward+backward alone takes ~10 s a call; --bench-large")
    if T > 256:
        smoke_only(request, "lengths above 256")
    backward = pass_ == "fwd+bwd"
    q, k, v, mask, dy = attention_inputs(T, dtype, device, backward)
    attend = IMPLS[impl]

    def run():
        y = attend(q, k, v, mask)
        if backward:
            torch.autograd.grad(y, (q, k, v), dy)
        sync(device)

    benchmark.group = "attention"
    benchmark.pedantic(run, rounds=ROUNDS[T], warmup_rounds=1)
    seconds = best(benchmark)
    if seconds is None:
        return
    flops = 4 * BATCH * HEADS * T * T * HEAD_DIM * (3 if backward else 1)  # QK^T and PV; backward = 2x forward
    key = (device, dtype, pass_, T)
    info = dict(device=device, dtype=dtype, pass_=pass_, seq_len=T, impl=impl, ms=1e3 * seconds,
                gflops_per_s=flops / seconds / 1e9, peak_mem_mib=peak_memory(run, device) / 2**20)
    if impl == "naive":
        measured[("attention",) + key] = seconds
    elif ("attention",) + key in measured:
        info["speedup_vs_naive"] = measured[("attention",) + key] / seconds
    benchmark.extra_info.update(info)
