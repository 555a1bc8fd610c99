"""
A compact BERT (Devlin et al., 2018) in plain PyTorch.

Numerically the original: post-LN encoder, exact (erf) GELU, learned absolute positions,
token types, tanh pooler, MLM head tied to the word embeddings and an NSP head. Parameter
names follow the Hugging Face layout (itself a transcription of Google's TF names), so real
BERT checkpoints load with `from_pretrained` and what we train loads in `transformers`.

Three choices make it fast:
- attention goes through F.scaled_dot_product_attention (a fused kernel: flash / memory-efficient
  on CUDA, a blocked kernel on CPU), except to return the probabilities or, on CPU, to apply
  dropout() below to them in training (where SDPA's CPU kernel takes the same explicit steps);
- the MLM head runs only at the masked positions (`masked_lm_positions`, padded to
  `max_predictions_per_seq`), as in Google's `run_pretraining.py`: the vocabulary projection is
  by far the largest matmul of a small BERT, and most positions are not predicted;
- on CPU, dropout() draws its mask from half the random numbers torch's own does.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import re
import warnings
from dataclasses import asdict, dataclass, field, fields
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from files import atomic_write

log = logging.getLogger(__name__)

# The compact BERTs of Turc et al. (2019), "Well-Read Students Learn Better", and the originals.
PRESETS: dict[str, tuple[int, int, int]] = {  # name: (layers, hidden, heads)
    "tiny": (2, 128, 2),
    "mini": (4, 256, 4),
    "small": (4, 512, 8),
    "medium": (8, 512, 8),
    "base": (12, 768, 12),
    "large": (24, 1024, 16),
}


# Sizes no BERT comes near (base is 12 x 768, vocabularies reach 250k): a config beyond them is a typo or
# a hostile file, refused before a byte is allocated for it.
SIZE_LIMITS = {"vocab_size": 1 << 24, "hidden_size": 1 << 16, "num_hidden_layers": 1 << 10,
               "num_attention_heads": 1 << 10, "intermediate_size": 1 << 18, "max_position_embeddings": 1 << 20,
               "type_vocab_size": 1 << 10, "num_labels": 1 << 20}


def physical_memory() -> int | None:
    """This machine's memory in bytes (None where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


@dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0
    num_labels: int = 2  # used by BertForSequenceClassification only
    id2label: dict[int, str] | None = field(default=None)

    def __post_init__(self):
        # A config may come from anyone's config.json: checked before any memory is taken for it.
        for name, high in SIZE_LIMITS.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= high:
                raise ValueError(f"{name} is {value!r}; it must be a whole number from 1 to {high:,}")
        for name, low, high in (("hidden_dropout_prob", 0, 1), ("attention_probs_dropout_prob", 0, 1),
                                ("layer_norm_eps", 0, 1), ("initializer_range", 0, 10)):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high \
                    or (name == "layer_norm_eps" and value == 0):
                raise ValueError(f"{name} is {value!r}; it must be a number in [{low}, {high}]"
                                 + (", above 0" if name == "layer_norm_eps" else ""))
        if self.pad_token_id is not None and (not isinstance(self.pad_token_id, int) or isinstance(self.pad_token_id, bool)
                                              or not 0 <= self.pad_token_id < self.vocab_size):
            raise ValueError(f"pad_token_id is {self.pad_token_id!r}; it must be a token id below vocab_size")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of "
                             f"num_attention_heads {self.num_attention_heads}")
        if self.id2label is not None:
            if not isinstance(self.id2label, dict) or not all(isinstance(v, str) for v in self.id2label.values()):
                raise ValueError("id2label must map class ids to label names")
            try:
                self.id2label = {int(k): v for k, v in self.id2label.items()}
            except (TypeError, ValueError):
                raise ValueError(f"id2label's keys must be class ids 0, 1, ...: {list(self.id2label)[:5]}") from None
            n = len(self.id2label)
            if sorted(self.id2label) != list(range(n)) or not 1 <= n <= SIZE_LIMITS["num_labels"]:
                raise ValueError(f"id2label's keys must be the class ids 0 to n-1: {sorted(self.id2label)[:5]}")
            self.num_labels = len(self.id2label)

    def num_parameters(self) -> int:
        """BertForPreTraining's parameter count (its MLM decoder tied to the word embeddings), from the
        config alone: what a model of this config takes, before it is built."""
        H, I, V = self.hidden_size, self.intermediate_size, self.vocab_size
        embeddings = (V + self.max_position_embeddings + self.type_vocab_size) * H + 2 * H
        layer = 4 * (H * H + H) + 2 * H + (H * I + I) + (I * H + H) + 2 * H  # attention, LayerNorms, FFN
        heads = (H * H + H) + (H * H + H) + 2 * H + V + (2 * H + 2)  # pooler, MLM transform + bias, NSP
        return embeddings + self.num_hidden_layers * layer + heads

    def check_memory(self, bytes_per_parameter: int, available: int | None) -> None:
        """ValueError when the parameters alone, at bytes_per_parameter each (4: fp32 weights; 16: weights,
        gradients and Adam's two moments), need more than `available` bytes."""
        need = self.num_parameters() * bytes_per_parameter
        if available and need > available:
            raise ValueError(f"{self.num_parameters() / 1e6:,.0f}M parameters ({self.num_hidden_layers} layers, "
                             f"hidden {self.hidden_size}, vocab {self.vocab_size}) need {need / 2**30:,.1f} GiB, "
                             f"more than the {available / 2**30:,.1f} GiB this machine has")

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "BertConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown config preset {name!r}; choose one of {', '.join(PRESETS)}")
        layers, hidden, heads = PRESETS[name]
        return cls(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                   intermediate_size=4 * hidden, **overrides)

    def to_hf_dict(self) -> dict:
        """The config.json that transformers' BertConfig reads."""
        d = {k: v for k, v in asdict(self).items() if k not in ("num_labels", "id2label")}
        id2label = self.id2label or {i: f"LABEL_{i}" for i in range(self.num_labels)}
        d.update(model_type="bert", hidden_act="gelu", position_embedding_type="absolute",
                 id2label={str(i): v for i, v in id2label.items()},
                 label2id={v: i for i, v in id2label.items()})
        return d

    @classmethod
    def from_hf_dict(cls, d: dict, source: str = "config") -> "BertConfig":
        if not isinstance(d, dict):
            raise CheckpointError(f"{source}: not a BERT config (a JSON {type(d).__name__}, not an object)")
        if d.get("model_type", "bert") != "bert":
            raise CheckpointError(f"{source}: model_type is {d['model_type']!r}, not a BERT")
        if d.get("hidden_act", "gelu") != "gelu":
            raise CheckpointError(f"{source}: hidden_act {d['hidden_act']!r} is not supported "
                                  "(BERT uses the exact erf 'gelu')")
        if d.get("position_embedding_type", "absolute") != "absolute":
            raise CheckpointError(f"{source}: only absolute position embeddings are supported")
        names = {f.name for f in fields(cls)} - {"num_labels", "id2label"}
        missing = {"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads"} - d.keys()
        if missing:
            raise CheckpointError(f"{source}: not a BERT config, missing {', '.join(sorted(missing))}")
        kwargs = {k: d[k] for k in names if k in d}
        if d.get("id2label"):
            kwargs["id2label"] = d["id2label"]
        elif "num_labels" in d:
            kwargs["num_labels"] = d["num_labels"]
        try:
            return cls(**kwargs)
        except ValueError as e:
            raise CheckpointError(f"{source}: {e}") from None


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file and what is wrong."""


# ----------------------------------------------------------------------------- modules


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """F.dropout, with a cheaper mask on CPU.

    torch's CPU dropout draws one Bernoulli variate per element from its Mersenne twister (`bernoulli_`),
    the largest cost of a small BERT's training step after the matmuls (issue 20's profile: 18% of the
    default pretraining step when it had dropout 0.1). Here one 31-bit draw (`random_`) gives two
    independent 15-bit uniforms, each compared with p: half the draws, and the compare and scale
    vectorised. p is then a multiple of 1/32768 (0.1 becomes 0.100006). CUDA's fused kernel is already
    cheap and is used as it is."""
    if not training or p == 0.0 or x.device.type != "cpu":
        return F.dropout(x, p, training)
    if p == 1.0:
        return x * 0.0
    n = x.numel()
    draws = torch.empty((n + 1) // 2, dtype=torch.int32).random_()  # uniform in [0, 2**31)
    uniform = torch.cat([draws & 0x7FFF, draws >> 16])[:n].view(x.shape)  # bits 0-14 and 16-30
    scale = (uniform >= round(p * 32768)).to(x.dtype).mul_(1.0 / (1.0 - p))  # 0 or 1/(1-p), as F.dropout
    return x * scale


class Dropout(nn.Dropout):
    """nn.Dropout through dropout() above: the same module, state and repr, a cheaper mask on CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


class BertEmbeddings(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size,
                                            padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.size(1), device=input_ids.device)
        x = (self.word_embeddings(input_ids) + self.position_embeddings(positions)
             + self.token_type_embeddings(token_type_ids))
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, H) -> (B, heads, T, head_dim)
        B, T, _ = x.shape
        return x.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, output_attentions: bool = False):
        q, k, v = self.split_heads(self.query(x)), self.split_heads(self.key(x)), self.split_heads(self.value(x))
        dropout_p = self.dropout_p if self.training else 0.0
        if output_attentions or (dropout_p and q.device.type == "cpu"):
            # The explicit path: for looking at the probabilities (the fused kernel never forms them), and for
            # dropout on CPU, where the fused kernel falls back to these same steps with torch's slower mask.
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
            if mask is not None:
                scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
            probs = scores.softmax(dim=-1)
            y = dropout(probs, dropout_p, self.training) @ v
            probs = probs if output_attentions else None
        else:
            probs = None
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        B, _, T, _ = y.shape
        return y.transpose(1, 2).reshape(B, T, -1), probs


class BertOutput(nn.Module):
    """Projection + dropout + residual + LayerNorm: BERT's post-LN sublayer output, used after
    attention (HF's BertSelfOutput) and after the feed-forward (HF's BertOutput)."""

    def __init__(self, config: BertConfig, in_size: int):
        super().__init__()
        self.dense = nn.Linear(in_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertOutput(config, config.hidden_size)

    def forward(self, x, mask, output_attentions=False):
        y, probs = self.self(x, mask, output_attentions)
        return self.output(y, x), probs


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))  # exact erf GELU, as the original


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config, config.intermediate_size)

    def forward(self, x, mask, output_attentions=False):
        x, probs = self.attention(x, mask, output_attentions)
        return self.output(self.intermediate(x), x), probs


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))


class BertPooler(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, sequence_output: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(sequence_output[:, 0]))  # the [CLS] position


# ----------------------------------------------------------------------------- checkpoints


HEAD_KEYS = ("cls.", "classifier.")  # the pretraining heads, and a classifier's


class BertPreTrainedModel(nn.Module):
    """Weight init and the Hugging Face checkpoint layout, shared by the three models."""

    base_prefix = "bert."  # where the BertModel lives inside the head models
    optional_keys: tuple[str, ...] = ()  # missing from a checkpoint -> freshly initialised, reported

    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=self.config.initializer_range)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)
                if isinstance(m, nn.Embedding) and m.padding_idx is not None:
                    nn.init.zeros_(m.weight[m.padding_idx])  # as transformers, so both start alike
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @classmethod
    def from_pretrained(cls, path: str, **config_overrides):
        """Load a directory with config.json + model.safetensors (or pytorch_model.bin)."""
        if not os.path.isdir(path):
            raise CheckpointError(f"{path}: no such checkpoint directory")
        config_file = os.path.join(path, "config.json")
        if not os.path.isfile(config_file):
            raise CheckpointError(f"{config_file}: missing (a checkpoint directory holds config.json "
                                  "and model.safetensors or pytorch_model.bin)")
        try:
            with open(config_file, encoding="utf-8") as f:
                hf_config = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, ValueError) as e:
            raise CheckpointError(f"{config_file}: not valid JSON ({type(e).__name__}: {str(e)[:80]})") from None
        if not isinstance(hf_config, dict):
            raise CheckpointError(f"{config_file}: not a BERT config (a JSON {type(hf_config).__name__}, not an object)")
        config = BertConfig.from_hf_dict({**hf_config, **config_overrides}, source=config_file)
        try:
            config.check_memory(8, physical_memory())  # the model, and the weights read into it
        except ValueError as e:
            raise CheckpointError(f"{config_file}: {e}") from None
        model = cls(config)
        state, weights_file = read_state_dict(path)
        model.load_hf_state_dict(state, weights_file)
        return model

    def load_hf_state_dict(self, state: dict[str, torch.Tensor], source: str = "state dict") -> None:
        own = self.state_dict()
        loaded, unexpected = {}, []
        for key, tensor in state.items():
            key = self.normalise_key(key)
            if key is None:
                continue
            if key not in own:
                unexpected.append(key)
                continue
            if tensor.shape != own[key].shape:
                raise CheckpointError(f"{source}: {key} has shape {tuple(tensor.shape)}, "
                                      f"the config expects {tuple(own[key].shape)}")
            loaded[key] = tensor
        missing = [k for k in own if k not in loaded and not self.is_tied(k)]
        fatal = [k for k in missing if not k.startswith(self.optional_keys)]
        if fatal:
            raise CheckpointError(f"{source}: missing {len(fatal)} weights the model needs, "
                                  f"e.g. {', '.join(fatal[:3])}")
        self.load_state_dict(loaded, strict=False)
        self.tie_weights()
        # A head the checkpoint lacks (a new classifier on a pretrained encoder) and another model's heads it
        # holds (the MLM and NSP heads, to a classifier) are what loading into another head model means:
        # said at INFO. Anything else is a warning.
        for keys, what in ((missing, "new, not in the checkpoint"), (unexpected, "in the checkpoint, not used")):
            normal = all(k.startswith(self.optional_keys + HEAD_KEYS) for k in keys)
            if keys:
                log.log(logging.INFO if normal else logging.WARNING, "%s: %s: %s", source, what, ", ".join(keys))
        self.load_report = {"missing": missing, "unexpected": unexpected}

    def normalise_key(self, key: str) -> str | None:
        """Map a checkpoint key onto our names; None for buffers that carry no weights."""
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        if key.endswith("position_ids") or key == "cls.predictions.decoder.weight":
            return None  # an index buffer, and the decoder is tied to the word embeddings
        if key == "cls.predictions.decoder.bias":
            key = "cls.predictions.bias"  # transformers ties these two; some files keep only one
        has_prefix = key.startswith("bert.")
        if self.base_prefix and not has_prefix and key.split(".")[0] in ("embeddings", "encoder", "pooler"):
            key = self.base_prefix + key  # a saved bare BertModel
        elif not self.base_prefix and has_prefix:
            key = key[len("bert."):]  # a head model's checkpoint loaded as a bare BertModel
        return key

    def is_tied(self, key: str) -> bool:
        return False

    def tie_weights(self) -> None:
        pass

    def save_pretrained(self, path: str, vocab_file: str | None = None) -> None:
        """Write config.json + model.safetensors (+ vocab.txt) as transformers lays them out."""
        from safetensors.torch import save

        os.makedirs(path, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items() if not self.is_tied(k)}
        config = self.config.to_hf_dict()
        config["architectures"] = [type(self).__name__]
        atomic_write(os.path.join(path, "config.json"),
                     lambda f: f.write(json.dumps(config, indent=2, sort_keys=True).encode()))
        atomic_write(os.path.join(path, "model.safetensors"),
                     lambda f: f.write(save(state, metadata={"format": "pt"})))
        if vocab_file is not None:
            with open(vocab_file, "rb") as src:
                data = src.read()
            atomic_write(os.path.join(path, "vocab.txt"), lambda f: f.write(data))


def read_state_dict(path: str) -> tuple[dict[str, torch.Tensor], str]:
    st, pt = os.path.join(path, "model.safetensors"), os.path.join(path, "pytorch_model.bin")
    if os.path.isfile(st):
        from safetensors.torch import load_file
        try:
            return load_file(st), st
        except Exception as e:  # a truncated or foreign file: say which one
            raise CheckpointError(f"{st}: cannot read weights ({first_line(e)})") from None
    if os.path.isfile(pt):
        state = torch_load(pt)
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f"{pt}: not a weights file (a {type(state).__name__}, not names to tensors)")
        return state, pt
    raise CheckpointError(f"{path}: no model.safetensors or pytorch_model.bin")


def torch_load(path: str, allowed: list | tuple = ()) -> object:
    """torch.load that never runs code from the file: tensors and plain Python values only (weights_only),
    plus the `allowed` classes. A file that asks for anything else (a pickle's way to run code) is refused
    before any of it runs: CheckpointError naming the file, as for a damaged one."""
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(list(allowed)):
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols: not for the user
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        wanted = re.search(r"GLOBAL (\S+)", str(e))  # how a pickle reaches code: a function or class by name
        if wanted:
            raise CheckpointError(f"{path}: refused, not a checkpoint of this project: loading it would call "
                                  f"{wanted.group(1)}, which no checkpoint needs (nothing in it was run)") from None
        operand = re.search(r"Unsupported operand (\d+)", str(e))
        reason = f"pickle opcode {operand.group(1)}, which torch.save never writes" if operand else first_line(e)
        raise CheckpointError(f"{path}: cannot read checkpoint: not a checkpoint of this project ({reason}); "
                              "nothing in it was run") from None
    except Exception as e:  # truncated, not a torch file at all, unreadable
        raise CheckpointError(f"{path}: cannot read checkpoint ({first_line(e)})") from None


def first_line(e: BaseException) -> str:
    """An exception's message cut to its first sentence: for a one-line error."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0].split(". ")[0]


# ----------------------------------------------------------------------------- models


class BertModel(BertPreTrainedModel):
    base_prefix = ""
    optional_keys = ("pooler.",)  # some checkpoints are saved without a pooler

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config)
        self.init_weights()

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, output_attentions: bool = False,
                context: int | None = None):
        """Returns (sequence_output, pooled_output), plus a tuple of per-layer attention
        probabilities (B, heads, T, T) when output_attentions=True (slower: no fused kernel).
        context=n reads each sequence as T/n independent blocks of n tokens (train_mlm.py's short-context
        start): attention and positions within a block, the outputs in the input's shape."""
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if context is not None and context < input_ids.size(1):
            if output_attentions:
                raise ValueError("output_attentions is for whole sequences: not with context")
            return self.forward_blocks(input_ids, token_type_ids, attention_mask, context)
        # Key-padding mask, broadcast over heads and queries; True = attend. None lets SDPA pick
        # its fastest kernel when nothing is padded.
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            mask = attention_mask.bool()[:, None, None, :]
        x = self.embeddings(input_ids, token_type_ids)
        attentions = []
        for layer in self.encoder.layer:
            x, probs = layer(x, mask, output_attentions)
            attentions.append(probs)
        if output_attentions:
            return x, self.pooler(x), tuple(attentions)
        return x, self.pooler(x)

    def forward_blocks(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor,
                       attention_mask: torch.Tensor | None, context: int) -> tuple[torch.Tensor, torch.Tensor]:
        B, T = input_ids.shape
        pad = -T % context  # a last, shorter block is padded to a whole one
        mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask != 0
        ids, types, mask = (F.pad(t, (0, pad)) for t in (input_ids, token_type_ids, mask))
        blocks = (-1, context)
        mask = mask.reshape(blocks)
        # A block of padding alone has nothing to attend to, a row some attention kernels turn into NaN (and NaN
        # gradients): it attends to its first position. Its outputs are padding's, never predicted from.
        mask[:, 0] |= ~mask.any(1)
        x, _ = self(ids.reshape(blocks), types.reshape(blocks), mask)
        x = x.view(B, T + pad, -1)[:, :T]
        return x, self.pooler(x)


class BertLMPredictionHead(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.transform = nn.Module()
        self.transform.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)  # tied to word embeddings
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.transform.LayerNorm(F.gelu(self.transform.dense(x)))
        # The bias inside the matmul (one addmm): a separate add would be another pass over the
        # (positions x vocab) logits, the largest activation of a small BERT.
        return F.linear(x, self.decoder.weight, self.bias)


class BertPreTrainingHeads(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)


class PreTrainingOutput(NamedTuple):
    loss: torch.Tensor | None  # mlm_loss + nsp_loss, as the original sums them
    mlm_loss: torch.Tensor | None
    nsp_loss: torch.Tensor | None
    mlm_logits: torch.Tensor  # (B, max_predictions_per_seq, vocab), or (B, T, vocab) without positions
    nsp_logits: torch.Tensor  # (B, 2); index 0 = IsNext, 1 = NotNext


class BertForPreTraining(BertPreTrainedModel):
    optional_keys = ("cls.",)

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.cls = BertPreTrainingHeads(config)
        self.init_weights()
        self.tie_weights()

    def tie_weights(self) -> None:
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight

    def is_tied(self, key: str) -> bool:
        return key == "cls.predictions.decoder.weight"

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None,
                masked_lm_positions: torch.Tensor | None = None,
                masked_lm_ids: torch.Tensor | None = None,
                masked_lm_weights: torch.Tensor | None = None,
                next_sentence_labels: torch.Tensor | None = None, context: int | None = None) -> PreTrainingOutput:
        sequence_output, pooled_output = self.bert(input_ids, token_type_ids, attention_mask, context=context)
        if masked_lm_positions is not None:
            # Gather the predicted positions before the vocabulary projection (the big matmul).
            index = masked_lm_positions.unsqueeze(-1).expand(-1, -1, sequence_output.size(-1))
            sequence_output = sequence_output.gather(1, index)
        mlm_logits = self.cls.predictions(sequence_output)
        nsp_logits = self.cls.seq_relationship(pooled_output)

        mlm_loss = nsp_loss = None
        if masked_lm_ids is not None:
            per_token = F.cross_entropy(mlm_logits.flatten(0, 1).float(), masked_lm_ids.flatten(), reduction="none")
            if masked_lm_weights is None:  # no padding slots
                mlm_loss = per_token.mean()
            else:  # the original's weighted mean: padding slots have weight 0
                w = masked_lm_weights.flatten().float()
                mlm_loss = (per_token * w).sum() / (w.sum() + 1e-5)
        if next_sentence_labels is not None:
            nsp_loss = F.cross_entropy(nsp_logits.float(), next_sentence_labels.flatten())
        losses = [l for l in (mlm_loss, nsp_loss) if l is not None]
        loss = sum(losses) if losses else None
        return PreTrainingOutput(loss, mlm_loss, nsp_loss, mlm_logits, nsp_logits)


class BertWithClassifier(BertPreTrainedModel):
    """The encoder, dropout and one linear layer to config.num_labels, as transformers' classifiers: what the
    two fine-tuning heads share (which output they classify is their forward's)."""

    optional_keys = ("classifier.", "bert.pooler.")  # a new head; a checkpoint without a pooler

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.init_weights()


class BertForSequenceClassification(BertWithClassifier):
    """A label for a sequence: the pooled [CLS] vector, dropout, the classifier."""

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Returns (loss, logits); loss is None without labels."""
        _, pooled_output = self.bert(input_ids, token_type_ids, attention_mask)
        logits = self.classifier(self.dropout(pooled_output))
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return loss, logits


class BertForTokenClassification(BertWithClassifier):
    """A label for every token (named entities): the encoder's sequence output, dropout, one linear layer, as
    transformers' BertForTokenClassification (whose checkpoints have no pooler: it is optional here)."""

    IGNORE = -100  # the label of a position left out of the loss: a word's later pieces, padding, [CLS], [SEP]

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Returns (loss, logits (B, T, num_labels)); loss is None without labels, and the mean over the
        positions whose label is not IGNORE."""
        sequence_output, _ = self.bert(input_ids, token_type_ids, attention_mask)
        logits = self.classifier(self.dropout(sequence_output))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=self.IGNORE)
        return loss, logits


# ----------------------------------------------------------------------------- FLOPs


def activation_bytes_per_sequence(config: BertConfig, seq_len: int) -> int:
    """A lower bound of what one sequence's forward pass keeps for the backward pass, in fp32: per layer and
    token, the query, key, value and attention output (4 x hidden) and the feed-forward activation's input
    and output (2 x intermediate). The real figure is higher (LayerNorms, dropout masks, the MLM head): the
    bound only serves to refuse batches that cannot fit."""
    return 4 * config.num_hidden_layers * seq_len * (4 * config.hidden_size + 2 * config.intermediate_size)


def pretraining_flops_per_sequence(config: BertConfig, seq_len: int, max_predictions_per_seq: int) -> float:
    """Matmul FLOPs of one training step (forward + backward = 3x forward) for one sequence,
    counting the MLM decoder only at the predicted positions, as this model computes it."""
    H, I, L, T = config.hidden_size, config.intermediate_size, config.num_hidden_layers, seq_len
    per_layer = 2 * T * (4 * H * H + 2 * H * I) + 2 * 2 * T * T * H  # projections + FFN; QK^T and AV
    heads = 2 * H * H + 2 * H * 2 + 2 * max_predictions_per_seq * (H * H + H * config.vocab_size)
    return 3.0 * (L * per_layer + heads)
