"""finetune_ner.py against transformers' BertForTokenClassification, the same checkpoint and recipe: entity F1 and time.

    python bench/ner_vs_transformers.py --init path/to/hf-bert-folder --seeds 1 2 3 [finetune_ner.py flags]

For each seed, finetune_ner.py runs as a user runs it (--init the folder, the embedded demo task unless
--train is given), and then the reference: transformers' BertForTokenClassification loaded from the same
folder, fine-tuned by the same recipe in the same loop — the same windows and first-piece labels, the
same batches in the same order, AdamW at the same learning rate with the same warmup and decay, the
same epochs, the best epoch by valid entity F1, reported on test with the same decoding and scorer.
Only the model differs. Prints one line per run and the means; the wall times are each whole run
(finetune_ner.py's also writes TensorBoard and saves its best epoch, which the reference does not).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import finetune_ner  # noqa: E402
import ner  # noqa: E402
from data import classification_batches  # noqa: E402
from model import BertConfig  # noqa: E402
from ner_tasks import load_tagging_task  # noqa: E402
from pretrained import default_lr, load_tokenizer  # noqa: E402
from training import Settings, StopSignal, Trainer, seed_everything  # noqa: E402


class Reference(torch.nn.Module):
    """transformers' model, called as ours is: (loss, logits)."""

    def __init__(self, hf):
        super().__init__()
        self.hf = hf

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, labels=None):
        out = self.hf(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask,
                      labels=labels)
        return out.loss, out.logits


def reference_run(s: Settings, seed: int) -> dict:
    """fine_tune()'s recipe with transformers' model: the same windows, batches, optimizer, schedule, epochs."""
    import transformers
    t_start = time.time()
    seed_everything(seed)
    task = load_tagging_task(s)
    labels = ner.label_list(task.train)
    tokenizer = load_tokenizer(s.init)
    hf = transformers.BertForTokenClassification.from_pretrained(s.init, num_labels=len(labels))
    model = Reference(hf)
    max_length = finetune_ner.window_length(s.max_length, s.init, hf.config)
    label_ids = {label: i for i, label in enumerate(labels)}
    (train, _), (valid, _), (test, _) = (ner.windows(x, tokenizer, label_ids, max_length, s.stride)
                                         for x in (task.train, task.valid, task.test))
    examples = [{"input_ids": w.input_ids, "token_type_ids": [0] * len(w.input_ids), "label": w.labels} for w in train]
    steps_per_epoch = math.ceil(len(examples) / s.batch_size)
    lr = default_lr(BertConfig(hidden_size=hf.config.hidden_size, num_attention_heads=hf.config.num_attention_heads))
    trainer = Trainer.start(model, s, seed, s.epochs * steps_per_epoch, lr, torch.device("cpu"), StopSignal())
    trainer.writer = NoWriter()
    best, best_state = -math.inf, None
    for epoch in range(1, s.epochs + 1):
        batches = classification_batches(examples, s.batch_size, tokenizer.pad_token_id, shuffle=True,
                                         seed=seed + epoch, bucket_size=s.bucket_size or None)
        trainer.train_epoch(batches, steps_per_epoch, len(examples), epoch)
        f1 = finetune_ner.evaluate(model, task.valid, valid, labels, s, tokenizer.pad_token_id, "cpu",
                                   trainer.autocast)["f1"]
        if f1 > best:
            best, best_state = f1, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    sentences, wins = (task.test, test) if task.test else (task.valid, valid)
    result = finetune_ner.evaluate(model, sentences, wins, labels, s, tokenizer.pad_token_id, "cpu", trainer.autocast)
    return {"f1": result["f1"], "f1_by_decoding": result["f1_by_decoding"], "best_valid_f1": best,
            "wall_seconds": time.time() - t_start, "lr": trainer.lr}


class NoWriter:
    def add_scalar(self, *args, **kwargs) -> None:
        pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--init", required=True, help="a Hugging Face BERT folder (config.json, weights, vocab.txt)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    known, rest = p.parse_known_args()
    out = tempfile.mkdtemp(prefix="ner-vs-transformers-")
    rows = []
    for seed in known.seeds:
        argv = ["--init", known.init, "--seed", str(seed), "--out-dir", out, "--run-name", f"ours-{seed}",
                "--no-progress", *rest]
        t0 = time.time()
        assert finetune_ner.main(argv) == 0
        with open(os.path.join(out, f"ours-{seed}", "results.json"), encoding="utf-8") as f:
            ours = json.load(f)
        ours["wall_seconds"] = time.time() - t0
        s = Settings(**vars(finetune_ner.train_parser().parse_args(argv)))
        ref = reference_run(s, seed)
        rows.append((seed, ours, ref))
        print(f"seed {seed}: entity F1 ours {ours['f1']:.4f} vs transformers {ref['f1']:.4f} "
              f"({ours['f1'] - ref['f1']:+.4f}); wall {ours['wall_seconds']:.0f}s vs {ref['wall_seconds']:.0f}s; "
              f"argmax F1 {ours['f1_by_decoding']['argmax']:.4f} vs {ref['f1_by_decoding']['argmax']:.4f}", flush=True)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    print(f"mean over {len(rows)} seeds: entity F1 ours {mean([o['f1'] for _, o, _ in rows]):.4f}, transformers "
          f"{mean([r['f1'] for _, _, r in rows]):.4f}; wall ours {mean([o['wall_seconds'] for _, o, _ in rows]):.0f}s, "
          f"transformers {mean([r['wall_seconds'] for _, _, r in rows]):.0f}s")


if __name__ == "__main__":
    main()
