"""Print the benchmark results as markdown tables.

    pytest bench/ --benchmark-only --benchmark-json=bench.json
    python bench/summary.py bench.json

Every figure comes from the JSON that pytest-benchmark wrote: the extra_info each benchmark recorded
(best round of the run, ratios measured in the same run) and the machine it ran on.
"""

import json
import sys
from collections import defaultdict


def table(header: list[str], rows: list[list]) -> str:
    def fmt(x):
        if x is None:
            return ""
        if isinstance(x, float):
            return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"
        return str(x)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def pct(x):
    return None if x is None else f"{100 * x:.1f}%"


def ratio(x):
    return None if x is None else f"{x:.2f}x"


def pairs(infos: list[dict], key: tuple, side: str, names: tuple) -> dict:
    """Group by the key fields, one entry per implementation: {key: {name: info}}."""
    out = defaultdict(dict)
    for info in infos:
        if info.get(side) in names:
            out[tuple(info[k] for k in key)][info[side]] = info
    return out


def main(path: str) -> None:
    with open(path) as f:
        run = json.load(f)
    groups = defaultdict(list)
    for b in run["benchmarks"]:
        if b["extra_info"]:
            groups[b["group"]].append(b["extra_info"])
    m = run["machine_info"]
    print(f"Machine: {m.get('cpu', {}).get('brand_raw', m.get('processor'))}, {m.get('cpu', {}).get('count')} CPUs; "
          f"torch {m.get('torch')} ({m.get('torch_threads')} threads); {m.get('gpu') or 'no GPU'}; load average at start/end "
          f"{m.get('loadavg_start')} / {m.get('loadavg_end', '?')}; {run['datetime'][:16]}\n")

    rows = []
    pretraining = pairs(groups["pretraining"], ("device", "preset", "vocab", "precision"), "impl", ("ours", "hf"))
    for (device, preset, vocab, precision), d in pretraining.items():
        ours, hf = d.get("ours", {}), d.get("hf", {})
        phases = "/".join(f"{ours[k]:.0f}" for k in ("forward_ms", "backward_ms", "optimizer_ms") if k in ours)
        # our best settings against transformers as most people run it (fp32)
        hf_fp32 = pretraining.get((device, preset, vocab, "fp32"), {}).get("hf", {})
        best_vs_fp32 = (ours["tokens_per_s"] / hf_fp32["tokens_per_s"]
                        if precision != "fp32" and ours and hf_fp32 else None)
        rows.append([device, preset, vocab, precision, ours.get("tokens_per_s"), hf.get("tokens_per_s"),
                     ratio(ours.get("speedup_vs_hf")), ratio(best_vs_fp32), pct(ours.get("mfu")),
                     pct(hf.get("mfu")), phases or None])
    if rows:
        print("### Pretraining step (batch 32 x 128, fwd + bwd + AdamW), tokens/s\n")
        print(table(["device", "preset", "vocab", "precision", "ours tok/s", "transformers tok/s", "speedup",
                     "vs transformers fp32", "ours MFU", "transformers MFU", "ours fwd/bwd/opt ms"], rows) + "\n")

    rows = [[i["device"], i["preset"], i["vocab"], i["precision"], i["tokens_per_s"], ratio(i.get("speedup_vs_hf")),
             pct(i["mfu"])] for i in groups["pretraining-compiled"]]
    if rows:
        print("### Pretraining step with torch.compile\n")
        print(table(["device", "preset", "vocab", "precision", "ours+compile tok/s", "speedup vs transformers",
                     "MFU"], rows) + "\n")

    rows = [[i["device"], i["recipe"], i["tokens_per_s"], ratio(i.get("speedup_vs_before", 1.0)), pct(i["mfu"])]
            for i in groups["recipe"]]
    if rows:
        print("### The default pretraining step (tiny, vocab 8192, 48 full rows of 64 tokens, 16 predictions) by recipe, "
              "each against the earlier default in the same rounds\n")
        print(table(["device", "recipe", "tok/s", "speedup vs before", "MFU"], rows) + "\n")

    rows = []
    for (device, dtype, pass_, T), d in pairs(groups["attention"], ("device", "dtype", "pass_", "seq_len"),
                                             "impl", ("naive", "sdpa")).items():
        naive, sdpa = d.get("naive", {}), d.get("sdpa", {})
        rows.append([device, dtype, pass_, T, naive.get("ms"), sdpa.get("ms"), ratio(sdpa.get("speedup_vs_naive")),
                     naive.get("gflops_per_s"), sdpa.get("gflops_per_s"), naive.get("peak_mem_mib"),
                     sdpa.get("peak_mem_mib")])
    if rows:
        print("### Attention (batch 8, 4 heads x 64, padding mask): naive vs SDPA\n")
        print(table(["device", "dtype", "pass", "seq len", "naive ms", "SDPA ms", "speedup", "naive GFLOP/s",
                     "SDPA GFLOP/s", "naive peak MiB", "SDPA peak MiB"], rows) + "\n")

    rows = [[i["mode"], i["padding"], i["samples_per_s"], f"{i['mean_length']:.0f}", pct(i["padding_fraction"]),
             ratio(i.get("speedup_vs_padded128"))] for i in groups["finetune"] if "mean_length" in i]
    if rows:
        print("### Classification, mini, batch 32, SST-2-like sentences (samples/s)\n")
        print(table(["mode", "batching", "samples/s", "mean tokens", "padding", "speedup vs padded128"], rows) + "\n")
    rows = [row for i in groups["finetune"] if i["padding"] == "token-classification"
            for row in (["transformers", i["transformers_samples_per_s"], None],
                        ["ours", i["samples_per_s"], ratio(i["speedup_vs_transformers"])])]
    if rows:
        print("### Token classification, mini, batch 32, a training epoch (samples/s)\n")
        print(table(["model", "samples/s", "speedup vs transformers"], rows) + "\n")

    rows = []
    for i in groups["data"]:
        headroom = ", ".join(f"{k.removeprefix('headroom_vs_').replace('_', ' on ')}: {v:.1f}x"
                             for k, v in i.items() if k.startswith("headroom_vs_"))
        rate = (f"{i['sequences_per_s']:,.0f} seq/s" if "sequences_per_s" in i else f"{i['tokens_per_s']:,.0f} tok/s")
        rows.append([i["what"], rate, f"{i['tokens_per_s']:,.0f}", headroom or None])
    if rows:
        print("### Data pipeline (one process)\n")
        print(table(["stage", "rate", "tokens/s", "headroom over the model's training rate"], rows) + "\n")

    rows = []
    for (device,), d in pairs(groups["adamw"], ("device",), "kind", ("default", "fused")).items():
        default, fused = d.get("default", {}), d.get("fused", {})
        speedup = default["ms"] / fused["ms"] if default and fused else None
        rows.append([device, default.get("ms"), fused.get("ms"), ratio(speedup)])
    if rows:
        print("### AdamW step on mini/30522's 11.3M parameters (ms)\n")
        print(table(["device", "default", "fused", "speedup"], rows) + "\n")

    corpus = [i for i in groups["corpus"] if "corpus_mb" in i]
    rows = []
    for size in sorted({i["corpus_mb"] for i in corpus}):
        prep = {i["workers"]: i for i in corpus if i["what"] == "prepare" and i["corpus_mb"] == size}
        runs = {i["start"]: i for i in corpus if i["what"] == "pretraining start" and i["corpus_mb"] == size}
        cold, warm = runs.get("cold", {}), runs.get("warm", {})
        rows.append([f"{size:,g} MB", prep.get(1, {}).get("mb_per_s"), prep.get(2, {}).get("mb_per_s"),
                     ratio(prep.get(2, {}).get("speedup_vs_1_worker")), cold.get("first_step_s"),
                     warm.get("first_step_s"), cold.get("peak_pss_mb"), warm.get("peak_pss_mb"),
                     warm.get("tokens_per_s")])
    if rows:
        print("### Corpus scale: preparation, and `train_mlm.py --data X --steps 20` (tiny)\n")
        print(table(["corpus", "prepare MB/s, 1 worker", "2 workers", "speedup", "first step s, cold",
                     "warm", "peak MB (PSS, all processes), cold", "warm", "train tok/s"], rows) + "\n")

    hard = [i for i in groups["corpus"] if i["what"] in ("prepare small files", "prepare one long line")]
    rows = [[f"{i['files']:,} files of 1 KB" if "files" in i else f"one JSONL line of {i['line_mb']:,.0f} MB",
             i.get("workers", 2), i["seconds"], i["mb_per_s"], i.get("mb_per_s_per_worker"), i["peak_pss_mb"]]
            for i in hard]
    if rows:
        print("### Corpus preparation: many small files, one enormous line\n")
        print(table(["corpus", "workers", "seconds", "MB/s", "MB/s per worker", "peak MB (PSS, all processes)"], rows)
              + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python bench/summary.py bench.json   (from pytest bench/ --benchmark-json=bench.json)")
    main(sys.argv[1])
