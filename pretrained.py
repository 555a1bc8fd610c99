"""
A classifier's initial weights and vocabulary: a pretrained checkpoint (a Hugging Face folder, or the
final/ export of a train_mlm.py run), or random weights for the scratch baseline, of the same size and
vocabulary as the newest pretraining run so that the two differ only in their weights.
"""

from __future__ import annotations

import glob
import json
import math
import os

from cli import DataError
from data import LabelMap
from model import BertConfig, BertForSequenceClassification, BertPreTrainedModel, CheckpointError, physical_memory
from token_cache import cached_vocab
from tokenization import BertTokenizer
from training import Settings


def newest_pretrained(out_dir: str) -> str | None:
    """The final/ export of the newest train_mlm.py run under out_dir (fine-tuning runs have none). Only
    complete exports count: config.json, vocab.txt and the weights (an export of older code may be half)."""
    configs = [c for c in glob.glob(os.path.join(glob.escape(out_dir), "*", "final", "config.json"))
               if os.path.isfile(os.path.join(os.path.dirname(c), "vocab.txt"))
               and os.path.isfile(os.path.join(os.path.dirname(c), "model.safetensors"))]
    return os.path.dirname(max(configs, key=os.path.getmtime)) if configs else None


def checkpoint_dir(init: str) -> str:
    """--init PATH: a Hugging Face layout directory, or a train_mlm.py run directory (its final/)."""
    if os.path.isfile(os.path.join(init, "config.json")):
        return init
    if os.path.isfile(os.path.join(init, "final", "config.json")):
        return os.path.join(init, "final")
    if os.path.isdir(os.path.join(init, "checkpoints")):
        raise CheckpointError(f"{init}: this train_mlm.py run has no final/ export yet (it is still running, "
                              "or stopped early); wait for it or resume it")
    raise CheckpointError(f"{init}: not a checkpoint directory (config.json + weights + vocab.txt), a "
                          "train_mlm.py run directory (final/), or 'scratch'")


def load_tokenizer(model_dir: str) -> BertTokenizer:
    vocab_file = os.path.join(model_dir, "vocab.txt")
    if not os.path.isfile(vocab_file):
        raise CheckpointError(f"{vocab_file}: missing; the checkpoint needs the vocabulary it was trained with")
    settings = tokenizer_settings(model_dir)
    if settings is None:  # Google's checkpoints ship none
        return tokenizer_for(vocab_file)
    return BertTokenizer(vocab_file, do_lower_case=settings.get("do_lower_case", True))


def tokenizer_settings(model_dir: str) -> dict | None:
    """A checkpoint's tokenizer_config.json (train_mlm.py's also holds model_max_length, the --seq-len it
    was pretrained at), or None when it has none."""
    settings_file = os.path.join(model_dir, "tokenizer_config.json")
    if not os.path.isfile(settings_file):
        return None
    settings = read_json(settings_file)
    if not isinstance(settings, dict):
        raise CheckpointError(f"{settings_file}: not a tokenizer config (a JSON {type(settings).__name__}, "
                              "not an object)")
    lower, length = settings.get("do_lower_case", True), settings.get("model_max_length")
    whole = isinstance(length, int) or isinstance(length, float) and math.isfinite(length) and length.is_integer()
    if not isinstance(lower, bool) or length is not None and (not whole or isinstance(length, bool) or length < 1):
        raise CheckpointError(f"{settings_file}: do_lower_case must be true or false and model_max_length a "
                              f"positive whole number (got {lower!r}, {length!r})")
    return settings


def read_json(path: str):
    """A JSON file of a checkpoint folder; CheckpointError naming it when it is not JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, ValueError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({type(e).__name__}: {str(e)[:80]})") from None


def tokenizer_for(vocab_file: str) -> BertTokenizer:
    """A tokenizer for a bare vocab.txt: lower-casing unless the vocabulary has upper-case tokens."""
    if not os.path.isfile(vocab_file):
        raise DataError(f"{vocab_file}: no such file")
    with open(vocab_file, encoding="utf-8") as f:
        cased = any(t[:1].isupper() for t in f.read().split() if not t.startswith("["))
    return BertTokenizer(vocab_file, do_lower_case=not cased)


def check_vocab(model_dir: str, tokenizer: BertTokenizer) -> None:
    config_file = os.path.join(model_dir, "config.json")
    config = read_json(config_file)
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_file}: not a BERT config (a JSON {type(config).__name__}, not an object)")
    if config.get("vocab_size") != len(tokenizer):
        raise CheckpointError(f"{config_file} has vocab_size {config.get('vocab_size')} but "
                              f"{tokenizer.vocab_file} has {len(tokenizer)} tokens: the vocabulary does not "
                              "belong to this checkpoint")


def scratch_vocab(s: Settings, train_texts: list[str], baseline_of: str | None) -> tuple[BertTokenizer, str]:
    """A vocabulary for the random-init baseline: --vocab, else that of the checkpoint it is compared with
    (`baseline_of`; by default the newest pretraining run), so that the two differ only in the weights, else one
    trained on the task's train texts."""
    if s.vocab:
        return tokenizer_for(s.vocab), f"the vocabulary {s.vocab}"
    pretrained = baseline_of or newest_pretrained(s.out_dir)
    if pretrained:
        return load_tokenizer(pretrained), f"the vocabulary of {pretrained}"
    vocab_file = cached_vocab(train_texts, s.vocab_size, s.cache_dir)
    return BertTokenizer(vocab_file), f"a {s.vocab_size}-token WordPiece vocabulary trained on the train split"


def scratch_config(s: Settings, vocab_size: int, overrides: dict, baseline_of: str | None) -> tuple[BertConfig, str]:
    """The random-init baseline's size: that of the checkpoint it is compared with (`baseline_of`), else --config,
    else the newest pretraining run's (so that the two differ only in the weights), else train_mlm.py's
    default, tiny; with `overrides` (its labels, the fine-tuning dropout)."""
    pretrained = baseline_of or (None if s.config else newest_pretrained(s.out_dir))
    if pretrained:
        config_file = os.path.join(pretrained, "config.json")
        hf_config = read_json(config_file)
        if not isinstance(hf_config, dict):
            raise CheckpointError(f"{config_file}: not a BERT config (a JSON {type(hf_config).__name__}, not an object)")
        config = BertConfig.from_hf_dict({**hf_config, "vocab_size": vocab_size, **overrides}, config_file)
        return config, f"the size of {pretrained}"
    name = s.config or "tiny"
    return BertConfig.from_preset(name, vocab_size=vocab_size, **overrides), f"the '{name}' preset"


def choose_init(s: Settings) -> str:
    """--init as given, else the newest train_mlm.py export under --out-dir, else 'scratch' (said)."""
    if s.init is not None:
        return s.init
    init = newest_pretrained(s.out_dir)
    if init is None:
        print(f"no train_mlm.py checkpoint under {s.out_dir}/ (no */final/config.json): fine-tuning a "
              f"randomly initialised '{s.config or 'tiny'}' BERT instead, as --init scratch would; pretrain one "
              "with `python train_mlm.py` to measure transfer learning")
        return "scratch"
    return init


def initial_model(s: Settings, init: str, train_texts: list[str], labels: LabelMap, baseline_of: str | None = None,
                  model_class=BertForSequenceClassification) -> tuple[BertPreTrainedModel, BertTokenizer, str, str]:
    """(model, tokenizer, the checkpoint directory or 'scratch', a note on where the weights and
    vocabulary come from) for `init`: a checkpoint, or 'scratch' (of the size and vocabulary of the
    checkpoint `baseline_of`, when it is the baseline of a comparison). model_class: a classifier of
    sequences (finetune_cls.py) or of tokens (finetune_ner.py)."""
    id2label = dict(enumerate(labels.labels))
    # --dropout, whatever the checkpoint was pretrained with: a model pretrained without dropout and
    # fine-tuned without it did worse with 16 labels per class (docs/fine-tuning.md)
    dropout = {"hidden_dropout_prob": s.dropout, "attention_probs_dropout_prob": s.dropout}
    if init == "scratch":
        tokenizer, vocab_note = scratch_vocab(s, train_texts, baseline_of)
        config, size_note = scratch_config(s, len(tokenizer), {"id2label": id2label, **dropout}, baseline_of)
        try:
            config.check_memory(16, physical_memory())  # to be trained: weights, gradients, Adam's moments
        except ValueError as e:
            raise CheckpointError(f"random init of {size_note}: {e}") from None
        return model_class(config), tokenizer, init, f"random init ({size_note}), {vocab_note}"
    model_dir = checkpoint_dir(init)
    tokenizer = load_tokenizer(model_dir)
    check_vocab(model_dir, tokenizer)
    model = model_class.from_pretrained(model_dir, id2label=id2label, **dropout)
    new = ["a new classifier head"] if any(k.startswith("classifier.") for k in model.load_report["missing"]) else []
    if any(k.startswith("bert.pooler.") for k in model.load_report["missing"]):
        new.append("a new pooler (the checkpoint has none)")
    return model, tokenizer, model_dir, f"the pretrained encoder of {model_dir}" + (
        f", with {' and '.join(new)}" if new else ", with its own classifier head")


# How well a vocabulary reads a task's text (BertTokenizer.reading), measured on 2,000 lines each: on its own
# language, at most 0.06% [UNK] and 1.0-1.4 pieces a word (English vocabulary on docsource, WikiText-2, Tiny
# Shakespeare; Chinese on pd1998); on another, 99% [UNK] (English vocabulary, Chinese text) or 3.5-4.0
# pieces a word (Chinese vocabulary, English text). Thresholds well apart from both:
MISREAD_UNK, MISREAD_PIECES = 0.05, 2.5


def warn_if_misread(tokenizer: BertTokenizer, texts: list[str], source: str, picked: bool) -> None:
    """One warning line when the model's vocabulary reads the task badly (trained on another language or
    domain), naming the model and how to choose another."""
    unk, pieces = tokenizer.reading(texts[:2000])
    if unk > MISREAD_UNK or pieces > MISREAD_PIECES:
        how = ("it was picked as the newest train_mlm.py run; choose another with --init PATH (or --init scratch)"
               if picked else "choose a model whose vocabulary was trained on text like the task's")
        print(f"warning: the vocabulary of {source} reads this task badly: {unk:.0%} of the word pieces are [UNK] "
              f"and a word takes {pieces:.1f} pieces (on its own language: under 1% and 1.0-1.4): {how}",
              flush=True)


def default_lr(config: BertConfig) -> float:
    # BERT's 2e-5..5e-5 is for base and large. The compact models need larger steps: on the default
    # task, sweeps gave the best test accuracy at 1e-3 for tiny and 2e-4 for mini (docs/fine-tuning.md).
    h = config.hidden_size
    return 1e-3 if h <= 128 else 2e-4 if h <= 256 else 1e-4 if h <= 512 else 3e-5 if h <= 768 else 2e-5
