"""Helpers shared by the benchmark files: devices, batches, timing, peak FLOP/s, peak memory."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import pytest
import torch

from training import measure_peak_flops

# CUDA cases are always collected, so a CPU-only run says what it did not measure.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                reason="no CUDA device on this machine"))]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def supports_bf16(device: str) -> bool:
    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def smoke_only(request, reason: str) -> None:
    """CI runs every benchmark body once (--benchmark-disable) to keep them from rotting; the big
    sizes add nothing to that check but minutes, so they run only when we actually time."""
    if request.config.getoption("benchmark_disable"):
        pytest.skip(f"smoke run: {reason} only when timing")


def best(benchmark) -> float | None:
    """Fastest round in seconds. On a shared machine other processes only ever add time, so the minimum
    is the most repeatable estimate and what every ratio and throughput here uses. In the smoke run
    (--benchmark-disable) it is the time of the one call made (conftest.SmokeTimed), so that every
    figure is still computed and checked, though it means nothing."""
    if benchmark.enabled:
        return benchmark.stats.stats.min if benchmark.stats else None
    return getattr(benchmark, "smoke_seconds", None)


def alternated(benchmark, fns: dict[str, Callable[[], None]], rounds: int, warmup_rounds: int,
               device: str = "cpu") -> dict[str, float] | None:
    """Median seconds of each of fns, called one after the other in every round, so that a shared
    machine's drift (+-20% within minutes on this project's 2-core machine) slows them alike and their ratio
    holds; the benchmark times the whole round. None when the benchmark ran nothing (best() says so).
    In the smoke run each is called once, and its one time is the 'median'."""
    times: dict[str, list[float]] = {name: [] for name in fns}

    def round_():
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    benchmark.pedantic(round_, rounds=rounds, warmup_rounds=warmup_rounds)
    if best(benchmark) is None:
        return None
    return {name: statistics.median(t[-rounds:]) for name, t in times.items()}  # the warmup rounds left out


def peak_flops(device: str, dtype: str) -> float:
    """FLOP/s of a large square matmul on this machine: the ceiling MFU is measured against, the
    same measurement train_mlm.py logs Perf/mfu against. Measured again next to each case, so that a
    machine shared with other jobs is equally busy for the case and for its ceiling."""
    return measure_peak_flops(torch.device(device), DTYPES[dtype])


def peak_memory(fn, device: str) -> int:
    """Bytes allocated by torch at the high-water mark of one call of fn, above what was
    already allocated when it started.
    CUDA: the caching allocator's own counter. CPU: torch keeps no such counter, and
    tracemalloc or RSS miss or blur torch's allocations, so we replay the allocation and free
    events that torch.profiler records from the CPU allocator and take the running maximum."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    current = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        current += e.nbytes()
        peak = max(peak, current)
    return peak


def pretraining_batch(batch_size: int, seq_len: int, max_predictions: int, vocab_size: int,
                      device: str = "cpu", seed: int = 0, masked_lm_prob: float = 0.15,
                      full_rows: bool = False) -> dict[str, torch.Tensor]:
    """A random batch shaped like data.py's: [CLS] A [SEP] B [SEP] with right padding (lengths
    from half to full; every row full with full_rows, as train_mlm.py's packed MLM-only sequences),
    masked_lm_prob of the real tokens masked (at most max_predictions, padded slots have weight 0),
    and random next-sentence labels."""
    g = torch.Generator().manual_seed(seed)
    B, T, P = batch_size, seq_len, max_predictions
    lengths = torch.randint(T // 2, T + 1, (B,), generator=g)
    lengths[0] = T  # one full row, as in a real batch
    if full_rows:
        lengths[:] = T
    real = torch.arange(T)[None] < lengths[:, None]
    input_ids = torch.randint(5, vocab_size, (B, T), generator=g) * real
    token_type_ids = (torch.arange(T)[None] >= (lengths[:, None] // 2)) & real
    positions = torch.zeros(B, P, dtype=torch.long)
    weights = torch.zeros(B, P)
    for i, n in enumerate(lengths.tolist()):
        k = min(P, max(1, round(masked_lm_prob * n)))
        positions[i, :k] = (torch.randperm(n - 1, generator=g)[:k] + 1).sort().values  # never [CLS]
        weights[i, :k] = 1
    batch = dict(input_ids=input_ids, token_type_ids=token_type_ids.long(), attention_mask=real.long(),
                 masked_lm_positions=positions,
                 masked_lm_ids=torch.randint(5, vocab_size, (B, P), generator=g) * weights.long(),
                 masked_lm_weights=weights,
                 next_sentence_labels=torch.randint(0, 2, (B,), generator=g))
    return {k: v.to(device) for k, v in batch.items()}


def hf_pretraining_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same batch as transformers takes it: labels over all positions, -100 where unmasked."""
    ids, positions, weights = batch["input_ids"], batch["masked_lm_positions"], batch["masked_lm_weights"]
    labels = torch.full_like(ids, -100)
    rows = torch.arange(ids.size(0), device=ids.device)[:, None].expand_as(positions)
    used = weights > 0
    labels[rows[used], positions[used]] = batch["masked_lm_ids"][used]
    return dict(input_ids=ids, token_type_ids=batch["token_type_ids"], attention_mask=batch["attention_mask"],
                labels=labels, next_sentence_label=batch["next_sentence_labels"])
