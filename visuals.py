"""
What both scripts show in TensorBoard beyond plain scalars: attention heat-maps, MLM predictions on
probe sentences, gradient norms and histograms, the token-embedding projector (pretraining); the
confusion matrix, precision-recall curves, misclassified examples and the [CLS] projector (fine-tuning).
"""

from __future__ import annotations

import math
import os
import re
import time

import numpy as np
import torch

from data import ClassificationExample

# Probe sentences: masked the same way at every visualisation step, so predictions can be compared over time.
PROBES = [
    "The function returns a new list containing all [MASK] from the iterable in sorted order.",
    "If the file does not exist , an [MASK] is raised .",
    "This module provides access to the [MASK] used or maintained by the interpreter.",
]
ATTENTION_PROBE = "If the file does not exist, the function raises an error and returns nothing."


# ----------------------------------------------------------------------------- both


def summary_writer(logdir: str, purge_step: int | None = None):
    """tensorboardX's SummaryWriter, its event file named to the nanosecond and by process: tensorboardX
    names it by the second alone, so a second writer in the same folder within the same second (a run
    resumed at once) would overwrite the first's file, and its events with it. The names also sort in the
    order the files were made, which TensorBoard's purge of a crashed run's steps relies on."""
    from tensorboardX import SummaryWriter
    return SummaryWriter(logdir, purge_step=purge_step, filename_suffix=f".{time.time_ns()}.{os.getpid()}")


def log_settings(writer, settings: dict, tag: str = "Run/args") -> None:
    """The run's settings as a text panel, one per line, so that a run's TensorBoard says how it was made."""
    writer.add_text(tag, "\n".join(f"    {k} = {v}" for k, v in sorted(settings.items())), 0)


# ----------------------------------------------------------------------------- pretraining


def custom_scalars_layout() -> dict:
    pair = lambda a, b: ["Multiline", [a, b]]
    return {"Train vs valid": {"loss": pair("Loss/train", "Loss/valid"),
                               "MLM loss": pair("Loss/train_mlm", "Loss/valid_mlm"),
                               "NSP loss": pair("Loss/train_nsp", "Loss/valid_nsp"),
                               "MLM accuracy": pair("Accuracy/train_mlm", "Accuracy/valid_mlm")},
            "Performance": {"throughput": ["Multiline", ["Perf/tokens_per_sec"]],
                            "MFU": ["Multiline", ["Perf/mfu"]]}}


def layer_of(name: str) -> str:
    """Group a parameter name by transformer layer: embeddings, layer_3, pooler, mlm_head, nsp_head."""
    parts = name.split(".")
    if "layer" in parts:
        return f"layer_{parts[parts.index('layer') + 1]}"
    for key, group in (("embeddings", "embeddings"), ("pooler", "pooler"), ("predictions", "mlm_head"),
                       ("seq_relationship", "nsp_head")):
        if key in parts:
            return group
    return parts[0]


def log_gradients(writer, model, step: int) -> None:
    """Per-layer gradient norms, and weight and gradient histograms of every weight matrix."""
    norms: dict[str, float] = {}
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        norms[layer_of(name)] = norms.get(layer_of(name), 0.0) + p.grad.float().pow(2).sum().item()
        if p.dim() >= 2:
            writer.add_histogram(f"Weights/{name}", p.detach().float().cpu(), step)
            writer.add_histogram(f"Grads/{name}", p.grad.float().cpu(), step)
    for group, sq in norms.items():
        writer.add_scalar(f"GradNorm/{group}", math.sqrt(sq), step)


def heatmap(probs: np.ndarray, cell: int = 8) -> np.ndarray:
    """(heads, T, T) probabilities -> one HWC uint8 image, heads side by side, white -> dark blue.
    Each row (query) is scaled by its own maximum: one token soaking up attention ([CLS], [SEP])
    would otherwise wash out every other pattern."""
    heads, T, _ = probs.shape
    gap = 4
    img = np.full((T * cell, heads * (T * cell + gap) - gap, 3), 255, dtype=np.uint8)
    low, high = np.array([255, 255, 255]), np.array([8, 48, 107])
    for h in range(heads):
        p = probs[h] / np.maximum(probs[h].max(axis=-1, keepdims=True), 1e-9)
        rgb = (low + (high - low) * p[..., None]).astype(np.uint8)
        x0 = h * (T * cell + gap)
        img[:, x0:x0 + T * cell] = rgb.repeat(cell, 0).repeat(cell, 1)
    return img


def probe_texts(tokenizer, corpus) -> tuple[list[str], str]:
    """(masked probes, attention probe): the English ones, unless the vocabulary cannot read them (a
    Chinese corpus, say: English words come out as [UNK] or letter by letter); then sentences of the
    first valid documents, their middle token masked."""
    text = " ".join(PROBES + [ATTENTION_PROBE])
    ids = tokenizer.tokenize_to_ids(text)
    if ids.count(tokenizer.unk_token_id) <= 0.05 * len(ids) and len(ids) <= 2 * len(text.split()):
        return PROBES, ATTENTION_PROBE
    sentences = [s.tolist() for d in range(min(50, corpus.num_documents())) for s in corpus.document(d)
                 if 8 <= len(s) <= 40][:4]
    if not sentences:
        return PROBES, ATTENTION_PROBE
    def joined(tokens: list[str]) -> str:  # no spaces next to CJK characters: the tokenizer splits them anyway
        return re.sub(r" (?=[\u3000-\u9fff\uff00-\uffef])|(?<=[\u3000-\u9fff\uff00-\uffef]) ", "",
                      " ".join(tokens).replace(" ##", ""))
    texts = []
    for s in sentences:
        tokens = tokenizer.convert_ids_to_tokens(s)
        tokens[len(tokens) // 2] = "[MASK]"
        texts.append(joined(tokens))
    return texts[1:] or texts, joined(tokenizer.convert_ids_to_tokens(sentences[0]))


@torch.no_grad()
def log_probes(writer, model, tokenizer, step: int, device, probes: tuple[list[str], str]) -> None:
    """Attention heat-maps for a fixed sentence, and top-5 MLM predictions on masked probes."""
    model.eval()
    masked, attention_probe = probes
    enc = tokenizer.encode(attention_probe)
    ids = torch.tensor([enc["input_ids"]], device=device)
    _, _, attentions = model.bert(ids, output_attentions=True)
    for i, a in enumerate(attentions):
        writer.add_image(f"Attention/layer_{i}", heatmap(a[0].float().cpu().numpy()), step, dataformats="HWC")
    if step == 0:
        writer.add_text("Attention/tokens", " ".join(tokenizer.convert_ids_to_tokens(enc["input_ids"])), step)
    rows = ["| masked input | top-5 predictions |", "|---|---|"]
    for text in masked:
        enc = tokenizer.encode(text)
        ids = torch.tensor([enc["input_ids"]], device=device)
        positions = (ids == tokenizer.mask_token_id).nonzero()[:, 1][None]
        logits = model(ids, masked_lm_positions=positions).mlm_logits[0]
        guesses = [", ".join(tokenizer.convert_ids_to_tokens(row.topk(5).indices.tolist())) for row in logits]
        rows.append(f"| {text} | {' / '.join(guesses)} |")
    writer.add_text("MLM/predictions", "\n".join(rows), step)
    model.train()


def log_eval(writer, m: dict, step: int) -> None:
    writer.add_scalar("Loss/valid", m["loss"], step)
    writer.add_scalar("Loss/valid_mlm", m["mlm_loss"], step)
    writer.add_scalar("Accuracy/valid_mlm", m["mlm_acc"], step)
    writer.add_scalar("Perplexity/valid", m["perplexity"], step)
    if "nsp_loss" in m:
        writer.add_scalar("Loss/valid_nsp", m["nsp_loss"], step)
        writer.add_scalar("Accuracy/valid_nsp", m["nsp_acc"], step)


def log_embeddings(writer, model, tokenizer, step: int, n: int = 2000) -> None:
    """The token-embedding projector, labelled with the tokens (the first n of the vocabulary)."""
    weight = model.bert.embeddings.word_embeddings.weight.detach().float().cpu()
    n = min(n, weight.size(0))
    writer.add_embedding(weight[:n], metadata=tokenizer.convert_ids_to_tokens(list(range(n))),
                         global_step=step, tag="token_embeddings")


# ----------------------------------------------------------------------------- fine-tuning


def confusion_image(cm: np.ndarray, cell: int = 32) -> np.ndarray:
    """The confusion matrix as an HWC uint8 heat-map (rows: true class, columns: predicted; each row
    normalised, white = 0 -> dark blue = the whole row), with grey grid lines."""
    share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    low, high = np.array([255, 255, 255]), np.array([8, 48, 107])
    img = (low + (high - low) * share[..., None]).astype(np.uint8).repeat(cell, 0).repeat(cell, 1)
    img[::cell, :], img[:, ::cell] = 160, 160
    return img


def confusion_table(cm: np.ndarray, labels: list[str]) -> str:
    rows = ["| true \\ predicted | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    rows += [f"| {label} | " + " | ".join(str(int(v)) for v in row) + " |" for label, row in zip(labels, cm)]
    return "\n".join(rows)


def log_validation(writer, result: dict, examples: list[ClassificationExample], labels: list[str], step: int) -> None:
    writer.add_scalar("Loss/valid", result["loss"], step)
    writer.add_scalar("Accuracy/valid", result["acc"], step)
    writer.add_scalar("F1/valid", result["f1"], step)
    writer.add_scalar("MCC/valid", result["mcc"], step)
    for c, label in enumerate(labels):  # one-vs-rest precision-recall curve per class
        writer.add_pr_curve(f"PR/{label}", result["labels"] == c, result["probs"][:, c], step)
    writer.add_image("Confusion/valid", confusion_image(result["cm"]), step, dataformats="HWC")
    writer.add_text("Confusion/valid_table", confusion_table(result["cm"], labels), step)
    wrong = np.flatnonzero(result["preds"] != result["labels"])[:25]
    rows = ["| text | true | predicted | p |", "|---|---|---|---|"]
    for i in wrong:
        e = examples[i]
        text = (e.text_a + (f" [SEP] {e.text_b}" if e.text_b else "")).replace("|", "\\|")
        p = result["probs"][i, result["preds"][i]]
        rows.append(f"| {text} | {e.label} | {labels[result['preds'][i]]} | {p:.2f} |")
    writer.add_text("Misclassified/valid", "\n".join(rows) if len(wrong) else "none", step)


def log_projector(writer, result: dict, examples: list[ClassificationExample], labels: list[str], step: int,
                  n: int = 1000) -> None:
    """The pooled [CLS] vectors of validation examples; colour by 'label' in the projector."""
    clean = lambda s: " ".join(s.split())[:200]  # the metadata is a TSV: no tabs or newlines
    meta = [[e.label, labels[p], clean(e.text_a)] for e, p in zip(examples[:n], result["preds"][:n])]
    writer.add_embedding(torch.from_numpy(result["pooled"][:n]), metadata=meta, global_step=step,
                         tag="CLS/valid", metadata_header=["label", "predicted", "text"])
