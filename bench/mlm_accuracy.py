"""Valid masked-LM accuracy of pretrained models at one masking rate: runs trained at different rates, compared alike.

    python bench/mlm_accuracy.py runs/a/final runs/b/final [--mask-prob 0.15] [--eval-batches 100] [--nsp]

train_mlm.py reports valid MLM accuracy at the rate it trains with (--mask-prob, 0.25 by default): a higher
rate hides more context, so figures of runs at different rates do not compare. Here every model folder (a
run's final/, with its vocab.txt) is evaluated on the same valid batches of the corpus the flags after the
folders name (train_mlm.py's corpus flags and --seq-len; the default corpus by default), masked at
--mask-prob (BERT's 15%), with BERT's 80/10/10 rule and max_predictions_per_seq = rate x length rounded up.
Valid is the split train_mlm.py holds out with the same --seed and --valid-fraction. Prints one line per
folder: MLM accuracy, loss, and the unigram baseline (always guessing the commonest token).
"""

from __future__ import annotations

import math
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import train_mlm  # noqa: E402
from model import BertForPreTraining  # noqa: E402


def main(argv: list[str]) -> None:
    folders = [a for a in argv if os.path.isdir(a) and os.path.isfile(os.path.join(a, "config.json"))]
    flags = [a for a in argv if a not in folders]
    if not folders:
        sys.exit("usage: python bench/mlm_accuracy.py MODEL_FOLDER... [--mask-prob P] [train_mlm.py's corpus flags]\n"
                 "(a model folder holds config.json, e.g. runs/<run>/final)")
    mask_prob = 0.15
    if "--mask-prob" in flags:
        mask_prob = float(flags[flags.index("--mask-prob") + 1])
    else:
        flags += ["--mask-prob", str(mask_prob)]
    seq_len = int(flags[flags.index("--seq-len") + 1]) if "--seq-len" in flags else 64
    flags += [] if "--max-predictions" in flags else ["--max-predictions", str(math.ceil(mask_prob * seq_len))]
    flags += [] if "--eval-batches" in flags else ["--eval-batches", "100"]
    torch.manual_seed(0)
    print(f"valid MLM accuracy at {mask_prob:.0%} masking ({' '.join(flags)})")
    for folder in folders:
        with tempfile.TemporaryDirectory() as out:
            args = train_mlm.parse_args(["--steps", "1", "--vocab", os.path.join(folder, "vocab.txt"),
                                         "--out-dir", out, "--run-name", "eval", *flags])
            s = train_mlm.resolve_settings(args, None, os.path.join(out, "eval"))
            _, tokenizer, train_corpus, valid_corpus, _ = train_mlm.prepare_data(s, True)
            _, valid = train_mlm.pretraining_streams(s, tokenizer, train_corpus, valid_corpus, 0, 1)
            model = BertForPreTraining.from_pretrained(folder)
            most_frequent = train_mlm.most_frequent_token(train_corpus, tokenizer)
            m = train_mlm.evaluate(model, valid, valid.state_dict(), s, torch.device("cpu"),
                                   train_mlm.autocast_for(torch.device("cpu"), "fp32"), most_frequent)
        print(f"{folder}: MLM accuracy {m['mlm_acc']:.2%}, loss {m['mlm_loss']:.3f} "
              f"(unigram baseline {m['unigram_acc']:.2%})", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
