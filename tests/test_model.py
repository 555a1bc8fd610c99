"""model.py against transformers (the test-only oracle), plus the properties BERT must have."""

import json
import math
import os

import pytest
import torch

from model import (BertConfig, BertForPreTraining, BertForSequenceClassification, BertForTokenClassification,
                   BertModel, BertSelfAttention, CheckpointError, dropout, pretraining_flops_per_sequence)

transformers = pytest.importorskip("transformers")

SMALL = dict(vocab_size=101, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=64, max_position_embeddings=40)
TOL = dict(atol=1e-5, rtol=1e-5)


def hf_config(**kw):
    return transformers.BertConfig(**{**SMALL, **kw})


def batch(seed=0, B=3, T=12, vocab=101):
    """Two segments and right padding: row 0 full, rows 1-2 padded."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, vocab, (B, T), generator=g)
    attention_mask = torch.ones(B, T, dtype=torch.long)
    attention_mask[1, 8:] = 0
    attention_mask[2, 5:] = 0
    input_ids[attention_mask == 0] = 0
    token_type_ids = torch.zeros(B, T, dtype=torch.long)
    token_type_ids[:, T // 2:] = 1
    token_type_ids[attention_mask == 0] = 0
    masked_lm_positions = torch.tensor([[1, 3, 7], [2, 4, 0], [1, 2, 3]])
    masked_lm_weights = torch.tensor([[1.0, 1, 1], [1, 1, 0], [1, 1, 1]])
    masked_lm_ids = torch.randint(5, vocab, (B, 3), generator=g) * masked_lm_weights.long()
    return dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                masked_lm_positions=masked_lm_positions, masked_lm_ids=masked_lm_ids,
                masked_lm_weights=masked_lm_weights, next_sentence_labels=torch.tensor([0, 1, 1]))


def inputs(b):
    return dict(input_ids=b["input_ids"], token_type_ids=b["token_type_ids"], attention_mask=b["attention_mask"])


def through_disk(ours_cls, hf_cls, direction, path, **config):
    """(ours, hf): a random model built by one library ("hf_to_ours": transformers), saved, and loaded
    into both."""
    if direction == "hf_to_ours":
        hf_cls(hf_config(**config)).save_pretrained(path)
    else:
        ours_cls(BertConfig(**SMALL, **config)).save_pretrained(str(path))
    return ours_cls.from_pretrained(str(path)).eval(), hf_cls.from_pretrained(path).eval()


def gather(x, positions):
    return x.gather(1, positions.unsqueeze(-1).expand(-1, -1, x.size(-1)))


def max_err(a, b):
    return (a - b).abs().max().item()


# ----------------------------------------------------------------------------- parity, both ways


@pytest.mark.parametrize("direction", ["hf_to_ours", "ours_to_hf"])
def test_bert_model_parity(tmp_path, direction):
    torch.manual_seed(0)
    ours, hf = through_disk(BertModel, transformers.BertModel, direction, tmp_path)
    b = batch()
    with torch.no_grad():
        seq, pooled = ours(**inputs(b))
        ref = hf(**inputs(b))
    assert max_err(seq, ref.last_hidden_state) < 1e-5
    assert max_err(pooled, ref.pooler_output) < 1e-5


@pytest.mark.parametrize("direction", ["hf_to_ours", "ours_to_hf"])
def test_pretraining_parity(tmp_path, direction):
    torch.manual_seed(1)
    ours, hf = through_disk(BertForPreTraining, transformers.BertForPreTraining, direction, tmp_path)
    assert ours.load_report == {"missing": [], "unexpected": []}
    b = batch()
    labels = torch.full_like(b["input_ids"], -100)  # transformers' form of the same MLM targets
    for row in range(3):
        for pos, tok, w in zip(b["masked_lm_positions"][row], b["masked_lm_ids"][row], b["masked_lm_weights"][row]):
            if w:
                labels[row, pos] = tok
    with torch.no_grad():
        out = ours(**b)
        ref = hf(**inputs(b), labels=labels, next_sentence_label=b["next_sentence_labels"])
    assert out.mlm_logits.shape == (3, 3, SMALL["vocab_size"])
    assert max_err(out.mlm_logits, gather(ref.prediction_logits, b["masked_lm_positions"])) < 1e-5
    assert max_err(out.nsp_logits, ref.seq_relationship_logits) < 1e-5
    assert abs(out.loss.item() - ref.loss.item()) < 1e-4
    # Without positions the head runs everywhere, like transformers.
    with torch.no_grad():
        everywhere = ours(**inputs(b)).mlm_logits
    assert max_err(everywhere, ref.prediction_logits) < 1e-5


@pytest.mark.parametrize("direction", ["hf_to_ours", "ours_to_hf"])
def test_classification_parity(tmp_path, direction):
    torch.manual_seed(2)
    ours, hf = through_disk(BertForSequenceClassification, transformers.BertForSequenceClassification, direction,
                            tmp_path, id2label={0: "neg", 1: "neu", 2: "pos"})
    assert hf.config.id2label == ours.config.id2label == {0: "neg", 1: "neu", 2: "pos"}
    assert ours.config.num_labels == 3
    b = batch()
    labels = torch.tensor([0, 2, 1])
    with torch.no_grad():
        loss, logits = ours(**inputs(b), labels=labels)
        ref = hf(**inputs(b), labels=labels)
    assert max_err(logits, ref.logits) < 1e-5
    assert abs(loss.item() - ref.loss.item()) < 1e-5


@pytest.mark.parametrize("direction", ["hf_to_ours", "ours_to_hf"])
def test_token_classification_parity(tmp_path, direction):
    """A label per token: the same logits and loss as transformers' BertForTokenClassification, each model's
    export loaded by the other; -100 positions (later word pieces, padding) left out of the loss alike."""
    torch.manual_seed(6)
    id2label = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
    ours, hf = through_disk(BertForTokenClassification, transformers.BertForTokenClassification, direction,
                            tmp_path, id2label=id2label)
    assert hf.config.id2label == ours.config.id2label == id2label
    b = batch()
    labels = torch.randint(0, 5, b["input_ids"].shape, generator=torch.Generator().manual_seed(1))
    labels[b["attention_mask"] == 0] = -100
    labels[:, 3] = -100  # a word's second piece
    with torch.no_grad():
        loss, logits = ours(**inputs(b), labels=labels)
        ref = hf(**inputs(b), labels=labels)
    assert logits.shape == (3, 12, 5) and max_err(logits, ref.logits) < 1e-5
    assert abs(loss.item() - ref.loss.item()) < 1e-5


def test_attention_probabilities_match_transformers(tmp_path):
    torch.manual_seed(3)
    hf = transformers.BertModel(hf_config(attn_implementation="eager")).eval()
    hf.save_pretrained(tmp_path)
    ours = BertModel.from_pretrained(str(tmp_path)).eval()
    b = batch()
    with torch.no_grad():
        seq, pooled, attentions = ours(**inputs(b), output_attentions=True)
        ref = hf(**inputs(b), output_attentions=True)
        fused_seq, _ = ours(**inputs(b))
    assert len(attentions) == SMALL["num_hidden_layers"]
    assert attentions[0].shape == (3, SMALL["num_attention_heads"], 12, 12)
    for a, r in zip(attentions, ref.attentions):
        assert max_err(a, r) < 1e-5
    assert torch.allclose(attentions[0].sum(-1), torch.ones(3, 4, 12), atol=1e-5)
    assert attentions[0][2, :, :, 5:].abs().max() == 0  # padded keys get no attention
    assert max_err(seq, fused_seq) < 1e-5  # the explicit path computes the same thing


# ----------------------------------------------------------------------------- real-checkpoint variants


def test_loads_bare_model_into_head_model_and_reports_fresh_heads(tmp_path, caplog):
    torch.manual_seed(4)
    hf = transformers.BertModel(hf_config()).eval()
    hf.save_pretrained(tmp_path)  # keys have no "bert." prefix
    with caplog.at_level("INFO"):
        ours = BertForPreTraining.from_pretrained(str(tmp_path)).eval()
    missing = ours.load_report["missing"]
    assert "cls.seq_relationship.weight" in missing and "cls.predictions.bias" in missing
    assert not any(k.startswith("bert.") for k in missing)
    # new heads on a pretrained encoder are what loading into a head model means: said, not warned
    assert [r.levelname for r in caplog.records] == ["INFO"] and "new, not in the checkpoint" in caplog.text
    with torch.no_grad():
        seq, _ = ours.bert(**inputs(batch()))
        assert max_err(seq, hf(**inputs(batch())).last_hidden_state) < 1e-5


def test_loads_head_checkpoint_as_bare_model(tmp_path):
    torch.manual_seed(5)
    hf = transformers.BertForPreTraining(hf_config()).eval()
    hf.save_pretrained(tmp_path)  # keys carry "bert." and "cls."
    ours = BertModel.from_pretrained(str(tmp_path)).eval()
    assert any(k.startswith("cls.") for k in ours.load_report["unexpected"])
    with torch.no_grad():
        assert max_err(ours(**inputs(batch()))[0], hf.bert(**inputs(batch())).last_hidden_state) < 1e-5


def test_loads_old_gamma_beta_names_position_ids_and_pytorch_bin(tmp_path):
    torch.manual_seed(6)
    hf = transformers.BertForPreTraining(hf_config()).eval()
    state = {}
    for k, v in hf.state_dict().items():
        state[k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")] = v.clone()
    state["bert.embeddings.position_ids"] = torch.arange(SMALL["max_position_embeddings"])[None]
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps(hf.config.to_dict()))
    ours = BertForPreTraining.from_pretrained(str(tmp_path)).eval()
    assert ours.load_report == {"missing": [], "unexpected": []}
    b = batch()
    with torch.no_grad():
        assert max_err(ours(**inputs(b)).mlm_logits, hf(**inputs(b)).prediction_logits) < 1e-5


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint directory"):
        BertModel.from_pretrained(str(tmp_path / "nope"))
    with pytest.raises(CheckpointError, match="config.json: missing"):
        BertModel.from_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2}))
    with pytest.raises(CheckpointError, match="not a BERT"):
        BertModel.from_pretrained(str(tmp_path))
    BertModel(BertConfig(**SMALL)).save_pretrained(str(tmp_path))
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "hidden_size": 64}))
    with pytest.raises(CheckpointError, match=r"model.safetensors: embeddings\.\S+ has shape \(\d+(, 32)?,?\), the config expects \(\d+(, 64)?,?\)"):
        BertModel.from_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    os.remove(tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="no model.safetensors or pytorch_model.bin"):
        BertModel.from_pretrained(str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match="cannot read weights"):
        BertModel.from_pretrained(str(tmp_path))


def test_save_pretrained_round_trip_and_vocab(tmp_path):
    torch.manual_seed(7)
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[PAD]\n[UNK]\n")
    model = BertForPreTraining(BertConfig(**SMALL)).eval()
    model.save_pretrained(str(tmp_path / "ckpt"), vocab_file=str(vocab))
    assert (tmp_path / "ckpt" / "vocab.txt").read_text() == "[PAD]\n[UNK]\n"
    assert not [p for p in os.listdir(tmp_path / "ckpt") if p.startswith(".tmp")]  # no temp files left
    again = BertForPreTraining.from_pretrained(str(tmp_path / "ckpt")).eval()
    want, got = model.state_dict(), again.state_dict()
    assert list(want) == list(got)  # every key on both sides, in order
    for k in want:
        assert torch.equal(want[k], got[k]), k


# ----------------------------------------------------------------------------- properties


def test_padding_invariance():
    torch.manual_seed(8)
    model = BertForPreTraining(BertConfig(**SMALL)).eval()
    ids = torch.randint(5, 101, (1, 7))
    types = torch.tensor([[0, 0, 0, 0, 1, 1, 1]])
    positions = torch.tensor([[1, 5]])
    with torch.no_grad():
        alone = model(ids, types, torch.ones_like(ids), positions)
        pad = torch.zeros(1, 9, dtype=torch.long)
        padded_ids = torch.cat([torch.cat([ids, pad], 1), torch.randint(5, 101, (1, 16))])
        padded_types = torch.cat([torch.cat([types, pad], 1), torch.zeros(1, 16, dtype=torch.long)])
        mask = torch.cat([torch.cat([torch.ones_like(ids), pad], 1), torch.ones(1, 16, dtype=torch.long)])
        in_batch = model(padded_ids, padded_types, mask, torch.cat([positions, positions]))
        seq_alone, _ = model.bert(ids, types, torch.ones_like(ids))
        seq_batch, _ = model.bert(padded_ids, padded_types, mask)
    assert max_err(seq_alone[0], seq_batch[0, :7]) < 1e-5
    assert max_err(alone.mlm_logits[0], in_batch.mlm_logits[0]) < 1e-5
    assert max_err(alone.nsp_logits[0], in_batch.nsp_logits[0]) < 1e-5


def test_shapes_and_presets():
    config = BertConfig.from_preset("mini", vocab_size=1000)
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
            config.intermediate_size) == (4, 256, 4, 1024)
    model = BertForPreTraining(config)
    b = batch(vocab=1000)
    out = model(**b)
    assert out.mlm_logits.shape == (3, 3, 1000) and out.nsp_logits.shape == (3, 2)
    assert out.loss.shape == () and torch.isclose(out.loss, out.mlm_loss + out.nsp_loss)
    seq, pooled = model.bert(b["input_ids"])
    assert seq.shape == (3, 12, 256) and pooled.shape == (3, 256)
    # bert-base-uncased's BertModel has 109,482,240 parameters.
    base = BertModel(BertConfig.from_preset("base"))
    assert sum(p.numel() for p in base.parameters()) == 109_482_240
    with pytest.raises(ValueError, match="unknown config preset 'huge'"):
        BertConfig.from_preset("huge")
    with pytest.raises(ValueError, match="not a multiple"):
        BertConfig(hidden_size=30, num_attention_heads=4)


def test_loss_values_on_known_inputs():
    """With a zero MLM transform and zero NSP head every logit is 0: the losses are log(V) and log(2)."""
    torch.manual_seed(9)
    model = BertForPreTraining(BertConfig(**SMALL)).eval()
    with torch.no_grad():
        model.cls.predictions.transform.LayerNorm.weight.zero_()
        model.cls.seq_relationship.weight.zero_()
    out = model(**batch())
    assert math.isclose(out.mlm_loss.item(), math.log(101), rel_tol=1e-4)
    assert math.isclose(out.nsp_loss.item(), math.log(2), rel_tol=1e-4)
    # The weighted mean ignores padding slots (weight 0), as the original.
    model = BertForPreTraining(BertConfig(**SMALL)).eval()
    b = batch()
    out = model(**b)
    ce = torch.nn.functional.cross_entropy(out.mlm_logits.flatten(0, 1), b["masked_lm_ids"].flatten(), reduction="none")
    keep = b["masked_lm_weights"].flatten().bool()
    assert torch.isclose(out.mlm_loss, ce[keep].mean(), atol=1e-5)


def test_init_as_bert():
    config = BertConfig(**{**SMALL, "vocab_size": 3000, "hidden_size": 256, "intermediate_size": 1024})
    model = BertForPreTraining(config)
    q = model.bert.encoder.layer[0].attention.self.query
    assert abs(q.weight.std().item() - 0.02) < 0.001 and q.bias.abs().max() == 0
    assert model.bert.embeddings.word_embeddings.weight[0].abs().max() == 0  # [PAD] row
    ln = model.bert.encoder.layer[0].output.LayerNorm
    assert torch.equal(ln.weight, torch.ones(256)) and torch.equal(ln.bias, torch.zeros(256))


def test_decoder_tied_to_word_embeddings():
    model = BertForPreTraining(BertConfig(**SMALL))
    emb = model.bert.embeddings.word_embeddings.weight
    assert model.cls.predictions.decoder.weight is emb
    assert sum(p is emb for p in model.parameters()) == 1  # one parameter, counted once
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(**batch()).loss.backward()
    opt.step()
    assert model.cls.predictions.decoder.weight is emb
    assert "cls.predictions.decoder.weight" not in model.state_dict() or \
        model.state_dict()["cls.predictions.decoder.weight"].data_ptr() == emb.data_ptr()


def test_overfits_one_batch():
    torch.manual_seed(10)
    model = BertForPreTraining(BertConfig(**SMALL, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    b = batch()
    first = model(**b).loss.item()
    for _ in range(100):
        opt.zero_grad()
        loss = model(**b).loss
        loss.backward()
        opt.step()
    assert loss.item() < first / 10


def test_classifier_overfits_and_dropout_is_active_in_training():
    torch.manual_seed(11)
    model = BertForSequenceClassification(BertConfig(**SMALL, num_labels=3))
    b = batch()
    with torch.no_grad():
        assert not torch.equal(model(**inputs(b))[1], model(**inputs(b))[1])  # dropout on in train mode
        model.eval()
        assert torch.equal(model(**inputs(b))[1], model(**inputs(b))[1])
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    labels = torch.tensor([0, 2, 1])
    first = model(**inputs(b), labels=labels)[0].item()
    for _ in range(60):
        opt.zero_grad()
        loss, _ = model(**inputs(b), labels=labels)
        loss.backward()
        opt.step()
    assert loss.item() < first / 10


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_cpu_dropout_zeroes_a_fraction_p_and_scales_the_rest_as_torch_does(p):
    """model.dropout's mask (two 15-bit uniforms per 31-bit draw) against the rates and scale of F.dropout."""
    torch.manual_seed(0)
    n = 1_000_001  # odd: the last draw's second half is cut off
    y = dropout(torch.ones(n), p, True)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - round(p * 32768) / 32768) < 5 * math.sqrt(p * (1 - p) / n)  # 5 sigma
    kept = y[y != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / (1 - p)))
    # The two halves of a draw are independent: no correlation between neighbouring elements' masks.
    a, b = (y[:-1] == 0).float(), (y[1:] == 0).float()
    assert abs((a * b).mean().item() - dropped ** 2) < 5 * math.sqrt(p * p / n)
    m = (n + 1) // 2  # element i and element m + i come from the same draw
    same_draw = (y[:n - m] == 0).float() * (y[m:] == 0).float()
    assert abs(same_draw.mean().item() - dropped ** 2) < 5 * math.sqrt(p * p / n)


def test_cpu_dropout_gradient_seed_dtype_and_identities():
    x = torch.randn(4, 6, 8, requires_grad=True)
    torch.manual_seed(1)
    y = dropout(x, 0.3, True)
    y.sum().backward()
    assert torch.equal(x.grad, (y != 0).float() / 0.7)  # the gradient goes through the kept elements, scaled
    torch.manual_seed(1)
    assert torch.equal(dropout(x, 0.3, True), y)  # drawn from torch's generator: seeded runs repeat
    assert not torch.equal(dropout(x, 0.3, True), y)
    assert dropout(x, 0.3, False) is x and dropout(x, 0.0, True) is x
    assert torch.equal(dropout(x, 1.0, True), torch.zeros_like(x))
    assert dropout(x.detach().bfloat16(), 0.3, True).dtype == torch.bfloat16  # autocast's dtype kept


def test_attention_takes_the_explicit_path_for_dropout_on_cpu_and_it_equals_the_fused_kernel():
    """In training with attention dropout the CPU path forms the probabilities itself (to use dropout()); with
    a dropout that keeps everything (p below 1/65536 rounds to no drops) it must equal the fused kernel."""
    torch.manual_seed(3)
    config = BertConfig(**SMALL, attention_probs_dropout_prob=1e-6)
    attention = BertSelfAttention(config)
    x = torch.randn(3, 12, 32)
    mask = torch.ones(3, 1, 1, 12, dtype=torch.bool)
    mask[1, ..., 8:] = False
    explicit = attention.train()(x, mask)[0]
    fused = attention.eval()(x, mask)[0]
    assert max_err(explicit, fused / (1 - 1e-6)) < 1e-5
    attention.dropout_p = 0.5
    assert max_err(attention.train()(x, mask)[0], fused) > 1e-2  # and it does drop when p is real


def test_flops_formula_counts_masked_positions_only():
    config = BertConfig.from_preset("mini")
    few = pretraining_flops_per_sequence(config, 128, 20)
    all_positions = pretraining_flops_per_sequence(config, 128, 128)
    decoder = 3 * 2 * config.hidden_size * config.vocab_size
    assert math.isclose(all_positions - few, 108 * (decoder + 3 * 2 * 256 * 256), rel_tol=1e-9)
    # Dominant term check against the 6 * params * tokens rule for the encoder matmuls.
    encoder_params = 4 * (4 * 256 * 256 + 2 * 256 * 1024)
    assert few > 6 * encoder_params * 128


@pytest.mark.parametrize("seq_len,predictions", [(128, 20), (64, 10)])
def test_flops_formula_equals_torch_flop_counter_on_the_real_modules(seq_len, predictions):
    """pretraining_flops_per_sequence (the MFU numerator) against torch's FlopCounterMode, which counts every
    matmul of a real forward and backward pass of the model."""
    from torch.utils.flop_counter import FlopCounterMode
    config = BertConfig.from_preset("tiny", vocab_size=4096)
    model = BertForPreTraining(config)
    B = 2
    ids = torch.randint(5, config.vocab_size, (B, seq_len))
    positions = torch.stack([torch.randperm(seq_len)[:predictions].sort().values for _ in range(B)])
    with FlopCounterMode(display=False) as counter:
        out = model(ids, torch.zeros_like(ids), torch.ones_like(ids), positions,
                    torch.randint(5, config.vocab_size, (B, predictions)), torch.ones(B, predictions),
                    torch.zeros(B, dtype=torch.long))
        out.loss.backward()
    assert counter.get_total_flops() == pytest.approx(B * pretraining_flops_per_sequence(config, seq_len, predictions),
                                                      rel=1e-6)


# ----------------------------------------------------------------------------- short context (train_mlm.py)


@pytest.mark.parametrize("context", [4, 5])  # 5 does not divide 12: the last block is shorter
def test_context_reads_each_block_as_its_own_sequence(context):
    torch.manual_seed(9)
    model = BertModel(BertConfig(**SMALL)).eval()
    b = batch()  # rows 1 and 2 padded from 8 and 5: row 2 has blocks of padding alone
    with torch.no_grad():
        out, pooled = model(**inputs(b), context=context)
        for row in range(3):
            for start in range(0, 12, context):
                piece = {k: v[row:row + 1, start:start + context] for k, v in inputs(b).items()}
                real = piece["attention_mask"][0].bool()
                if real.any():  # a block's real tokens: as if it were the whole sequence
                    alone, _ = model(**piece)
                    assert max_err(out[row, start:start + context][real], alone[0][real]) < 1e-5
        whole, _ = model(**inputs(b))
    assert out.shape == whole.shape and torch.isfinite(out).all()
    assert max_err(pooled, model.pooler(out)) == 0  # the first block's [CLS]
    assert max_err(model(**inputs(b), context=12)[0], whole) == 0  # a block as long as the sequence: no change


def test_context_with_blocks_of_padding_alone_trains_with_finite_gradients():
    torch.manual_seed(10)
    model = BertForPreTraining(BertConfig(**SMALL))
    out = model(**batch(), context=4)  # row 2: two blocks of padding alone (an all-masked row: NaN without care)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
