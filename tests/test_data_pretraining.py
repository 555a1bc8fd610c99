"""data.PretrainingData: instances and masking as Google's create_pretraining_data.py, checked statistically
on large samples (fixed seeds; tolerances of 5 binomial standard deviations)."""

import math
import time

import numpy as np
import pytest
import torch

import data

N_DOCS, IDS_PER_DOC, N_SUB = 300, 20, 200
BASE = 5  # first ordinary id: the five special tokens come first
SUB_BASE = BASE + N_DOCS * IDS_PER_DOC  # '##' pieces for whole-word masking


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    words = [f"w{i}" for i in range(N_DOCS * IDS_PER_DOC)] + [f"##s{i}" for i in range(N_SUB)]
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("".join(t + "\n" for t in list(data.SPECIAL_TOKENS) + words))
    return data.BertTokenizer(str(path))


def make_corpus(docs: list[list[list[int]]]) -> data.TokenizedCorpus:
    sentences = [s for d in docs for s in d]
    tokens = np.array([t for s in sentences for t in s], dtype=np.uint16)
    sentence_offsets = np.cumsum([0] + [len(s) for s in sentences])
    doc_offsets = np.cumsum([0] + [len(d) for d in docs])
    return data.TokenizedCorpus(tokens, sentence_offsets, doc_offsets)


def doc_of(token: int) -> int:
    return (token - BASE) // IDS_PER_DOC


@pytest.fixture(scope="module")
def corpus():
    """Documents whose tokens say which document they come from; sentences of 5-15 tokens."""
    rng = np.random.default_rng(0)
    docs = []
    for d in range(N_DOCS):
        ids = BASE + d * IDS_PER_DOC + np.arange(IDS_PER_DOC)
        docs.append([rng.choice(ids, rng.integers(5, 16)).tolist() for _ in range(rng.integers(2, 30))])
    return make_corpus(docs)


def batches(pd, n, batch_size=64):
    return [pd.next_batch(batch_size) for _ in range(n)]


def originals(batch):
    """The unmasked input: masked_lm_ids put back at masked_lm_positions."""
    tokens = batch["input_ids"].clone()
    rows = torch.arange(len(tokens))[:, None].expand_as(batch["masked_lm_positions"])
    real = batch["masked_lm_weights"] > 0
    tokens[rows[real], batch["masked_lm_positions"][real]] = batch["masked_lm_ids"][real]
    return tokens


def test_batch_layout(corpus, tokenizer):
    pd = data.PretrainingData(corpus, tokenizer, max_seq_length=64, max_predictions_per_seq=10, seed=1)
    for batch in batches(pd, 20, 32):
        assert sorted(batch) == sorted(["input_ids", "attention_mask", "token_type_ids", "masked_lm_positions",
                                        "masked_lm_ids", "masked_lm_weights", "next_sentence_labels"])  # one name each
        for key in ("input_ids", "attention_mask", "token_type_ids", "masked_lm_positions", "masked_lm_ids",
                    "next_sentence_labels"):
            assert batch[key].dtype == torch.int64, key
        assert batch["masked_lm_weights"].dtype == torch.float32
        assert batch["input_ids"].shape == (32, 64) and batch["masked_lm_positions"].shape == (32, 10)
        tokens = originals(batch)
        for b in range(32):
            n = int(batch["attention_mask"][b].sum())
            assert batch["attention_mask"][b, :n].all() and not batch["attention_mask"][b, n:].any()
            row = tokens[b].tolist()
            seps = [i for i, t in enumerate(row) if t == tokenizer.sep_token_id]
            assert row[0] == tokenizer.cls_token_id and len(seps) == 2 and seps[1] == n - 1
            assert all(t == tokenizer.pad_token_id for t in row[n:]) and tokenizer.cls_token_id not in row[1:]
            segments = batch["token_type_ids"][b].tolist()
            assert segments == [0] * (seps[0] + 1) + [1] * (n - seps[0] - 1) + [0] * (64 - n)
            k = int(batch["masked_lm_weights"][b].sum())
            positions = batch["masked_lm_positions"][b].tolist()
            assert positions[:k] == sorted(set(positions[:k])) and positions[k:] == [0] * (10 - k)
            assert batch["masked_lm_ids"][b, k:].eq(0).all() and batch["masked_lm_weights"][b, k:].eq(0).all()
            # [CLS], [SEP] and [PAD] are never masked
            assert not {0, *seps} & set(positions[:k]) and max(positions[:k]) < n


def test_selection_rate_and_80_10_10(corpus, tokenizer):
    pd = data.PretrainingData(corpus, tokenizer, max_seq_length=128, max_predictions_per_seq=128, seed=2)
    chosen = candidates = n_mask = n_kept = n_random = 0
    for batch in batches(pd, 60):
        lengths = batch["attention_mask"].sum(1)
        k = batch["masked_lm_weights"].sum(1).long()
        expected = torch.clamp(torch.round(lengths.double() * 0.15).long(), min=1)
        assert torch.equal(k, expected)  # exactly round(15%) of the sequence when not capped
        chosen += int(k.sum())
        candidates += int((lengths - 3).sum())
        real = batch["masked_lm_weights"] > 0
        now = batch["input_ids"].gather(1, batch["masked_lm_positions"])[real]
        label = batch["masked_lm_ids"][real]
        n_mask += int((now == tokenizer.mask_token_id).sum())
        n_kept += int((now == label).sum())
        n_random += int(((now != label) & (now != tokenizer.mask_token_id)).sum())
        assert not any(int(t) in tokenizer.special_ids for t in now[now != tokenizer.mask_token_id])
    assert abs(chosen / candidates - 0.15) < 0.005  # 15% of the non-special tokens
    n = n_mask + n_kept + n_random
    assert n == chosen and n > 30000
    sigma = math.sqrt(0.1 * 0.9 / n)
    assert abs(n_mask / n - 0.8) < 5 * math.sqrt(0.8 * 0.2 / n)
    # a random replacement equals the original with probability 1/vocab
    assert abs(n_kept / n - 0.1) < 5 * sigma + 0.1 / len(tokenizer)
    assert abs(n_random / n - 0.1) < 5 * sigma


def test_cap_at_max_predictions(corpus, tokenizer):
    pd = data.PretrainingData(corpus, tokenizer, max_seq_length=128, max_predictions_per_seq=5, seed=3)
    for batch in batches(pd, 5):
        lengths = batch["attention_mask"].sum(1)
        k = batch["masked_lm_weights"].sum(1)
        assert torch.equal(k.long(), torch.clamp(torch.round(lengths.double() * 0.15).long(), 1, 5))


def test_next_sentence_labels_and_random_documents(tokenizer):
    # long documents: a chunk of a single sentence (forced NotNext, as in the original) is rare
    rng = np.random.default_rng(4)
    docs = [[(BASE + d * IDS_PER_DOC + rng.integers(0, IDS_PER_DOC, rng.integers(5, 16))).tolist()
             for _ in range(300)] for d in range(60)]
    pd = data.PretrainingData(make_corpus(docs), tokenizer, max_seq_length=64, short_seq_prob=0.0, seed=4)
    labels = []
    for batch in batches(pd, 100):
        tokens = originals(batch)
        for b in range(len(tokens)):
            n = int(batch["attention_mask"][b].sum())
            sep = tokens[b].tolist().index(tokenizer.sep_token_id)
            docs_a = {doc_of(int(t)) for t in tokens[b, 1:sep]}
            docs_b = {doc_of(int(t)) for t in tokens[b, sep + 1:n - 1]}
            assert len(docs_a) == 1 and len(docs_b) == 1
            label = int(batch["next_sentence_labels"][b])
            assert (docs_a != docs_b) == (label == 1)  # NotNext really comes from another document
            labels.append(label)
    n = len(labels)
    assert abs(sum(labels) / n - 0.5) < 5 * math.sqrt(0.25 / n)


def test_short_sequences_about_ten_percent(tokenizer):
    """Documents of 126 one-token sentences give one full instance each, unless the document drew a short
    target (short_seq_prob, once per document as in the original)."""
    n_docs = 2000
    docs = [[[BASE + d]] * 126 for d in range(n_docs)]
    pd = data.PretrainingData(make_corpus(docs), tokenizer, max_seq_length=128, next_sentence=False, seed=5)
    short = set()
    for tokens, len_a, label in pd._epoch_instances(0):
        assert len(tokens) <= 128 and len_a == len(tokens) and label == 0
        assert tokens[0] == tokenizer.cls_token_id and tokens[-1] == tokenizer.sep_token_id
        if len(tokens) < 128:
            short.add(tokens[1])
    p = 0.1 * 124 / 125  # a target of 126 is a full one
    assert abs(len(short) / n_docs - p) < 5 * math.sqrt(p * (1 - p) / n_docs)


def test_single_segments_without_nsp(corpus, tokenizer):
    pd = data.PretrainingData(corpus, tokenizer, max_seq_length=64, next_sentence=False, seed=6)
    lengths = []
    for batch in batches(pd, 20):
        assert not batch["token_type_ids"].any() and not batch["next_sentence_labels"].any()
        tokens = originals(batch)
        for b in range(len(tokens)):
            n = int(batch["attention_mask"][b].sum())
            assert (tokens[b, :n] == tokenizer.sep_token_id).sum() == 1
            assert tokens[b, n - 1] == tokenizer.sep_token_id
            assert len({doc_of(int(t)) for t in tokens[b, 1:n - 1]}) == 1
            lengths.append(n)
    assert np.mean(np.array(lengths) == 64) > 0.5  # mostly filled to max_seq_length


def test_whole_word_masking_never_splits_a_word(tokenizer):
    rng = np.random.default_rng(7)
    docs = []
    for d in range(200):
        sentences = []
        for _ in range(10):
            sentence = []
            for _ in range(rng.integers(3, 12)):  # words of 1-4 pieces
                sentence += [BASE + d] + (SUB_BASE + rng.integers(0, N_SUB, rng.integers(0, 4))).tolist()
            sentences.append(sentence)
        docs.append(sentences)
    pd = data.PretrainingData(make_corpus(docs), tokenizer, max_seq_length=128, whole_word_masking=True, seed=8)
    is_sub = tokenizer.is_subword()
    total = 0
    for batch in batches(pd, 20):
        tokens = originals(batch)
        for b in range(len(tokens)):
            row, k = tokens[b].tolist(), int(batch["masked_lm_weights"][b].sum())
            masked = set(batch["masked_lm_positions"][b, :k].tolist())
            n = int(batch["attention_mask"][b].sum())
            assert k <= min(20, max(1, round(n * 0.15)))
            for p in masked:  # the whole word around p is masked
                start = p
                while is_sub[row[start]] and row[start - 1] not in (tokenizer.cls_token_id, tokenizer.sep_token_id):
                    start -= 1
                end = p + 1
                while end < n and is_sub[row[end]]:
                    end += 1
                assert set(range(start, end)) <= masked
            total += k
    assert total > 0.12 * 20 * 64 * 100  # and it still masks about 15%


def test_dynamic_masking_and_determinism(tokenizer):
    """One instance per document (a single 60-token sentence): the same instances every epoch, new masks."""
    docs = [[list(range(BASE + d * IDS_PER_DOC, BASE + d * IDS_PER_DOC + 20)) * 3] for d in range(64)]
    corpus = make_corpus(docs)
    make = lambda: data.PretrainingData(corpus, tokenizer, max_seq_length=64, next_sentence=False,
                                        short_seq_prob=0.0, seed=9)
    pd = make()
    masks = {}
    for epoch in range(2):
        batch = pd.next_batch(64)
        for b in range(64):
            doc = doc_of(int(originals(batch)[b, 1]))
            masks.setdefault(doc, []).append(tuple(batch["masked_lm_positions"][b].tolist()))
    assert len(masks) == 64 and sum(m[0] != m[1] for m in masks.values()) >= 60
    assert (pd.epoch, pd.cursor) == (1, 64)  # the stream moves to epoch 2 when the next instance is taken
    again = make()  # the same seed gives the same stream
    first = again.next_batch(64)
    assert all(torch.equal(first[k], pd_first) for k, pd_first in make().next_batch(64).items())
    other = data.PretrainingData(corpus, tokenizer, max_seq_length=64, next_sentence=False, short_seq_prob=0.0,
                                 seed=10).next_batch(64)
    assert not torch.equal(first["input_ids"], other["input_ids"])


def test_resume_from_state_dict(corpus, tokenizer):
    small = make_corpus([[s.tolist() for s in corpus.document(i)] for i in range(20)])
    pd = data.PretrainingData(small, tokenizer, max_seq_length=64, seed=11)
    n_epoch = len(pd._epoch_instances(0))
    for _ in range(n_epoch // 48 + 1):  # stop just before an epoch boundary
        pd.next_batch(16)
    state = pd.state_dict()
    assert set(state) >= {"epoch", "cursor", "seed"}
    expected = batches(pd, 8, 16)  # runs across the epoch boundary
    resumed = data.PretrainingData(small, tokenizer, max_seq_length=64, seed=11)
    resumed.load_state_dict(state)
    for want, got in zip(expected, batches(resumed, 8, 16)):
        for key in want:
            assert torch.equal(want[key], got[key]), key
    assert resumed.state_dict() == pd.state_dict() and pd.epoch >= 1


def test_ranks_split_the_global_batch(corpus, tokenizer):
    small = make_corpus([[s.tolist() for s in corpus.document(i)] for i in range(15)])
    kwargs = dict(max_seq_length=64, seed=12)
    single = data.PretrainingData(small, tokenizer, **kwargs)
    ranks = [data.PretrainingData(small, tokenizer, rank=r, world_size=2, **kwargs) for r in range(2)]
    for _ in range(12):  # several epochs of this small corpus
        want = single.next_batch(24)
        parts = [pd.next_batch(12) for pd in ranks]
        for key in want:
            assert torch.equal(want[key], torch.cat([p[key] for p in parts])), key
    assert single.state_dict() == ranks[0].state_dict() == ranks[1].state_dict()
    with pytest.raises(ValueError):
        data.PretrainingData(small, tokenizer, rank=2, world_size=2)


def test_truncate_seq_pair():
    import random
    rng = random.Random(0)
    for la, lb in [(10, 3), (3, 10), (7, 7), (1, 30)]:
        a, b = list(range(la)), list(range(100, 100 + lb))
        data.truncate_seq_pair(a, b, 8, rng)
        assert len(a) + len(b) == 8 and len(a) >= 1 and len(b) >= 1
        assert a == list(range(a[0], a[0] + len(a))) and b == list(range(b[0], b[0] + len(b)))  # contiguous


def test_batch_speed(corpus, tokenizer):
    """A loose floor (the report measures the real rate); catches a per-token Python loop creeping in."""
    pd = data.PretrainingData(corpus, tokenizer, max_seq_length=128)
    pd.next_batch(32)
    t0 = time.perf_counter()
    for _ in range(20):
        pd.next_batch(32)
    assert 20 * 32 / (time.perf_counter() - t0) > 1000


def reference_truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng):
    """Google's create_pretraining_data.truncate_seq_pair, verbatim."""
    while True:
        total_length = len(tokens_a) + len(tokens_b)
        if total_length <= max_num_tokens:
            break
        trunc_tokens = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        assert len(trunc_tokens) >= 1
        if rng.random() < 0.5:
            del trunc_tokens[0]
        else:
            trunc_tokens.pop()


def reference_instances(all_documents, document_index, max_seq_length, short_seq_prob, rng):
    """Google's create_instances_from_document (without masking), verbatim but for the output tuple."""
    document = all_documents[document_index]
    max_num_tokens = max_seq_length - 3
    target_seq_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_seq_length = rng.randint(2, max_num_tokens)
    instances = []
    current_chunk = []
    current_length = 0
    i = 0
    while i < len(document):
        segment = document[i]
        current_chunk.append(segment)
        current_length += len(segment)
        if i == len(document) - 1 or current_length >= target_seq_length:
            if current_chunk:
                a_end = 1
                if len(current_chunk) >= 2:
                    a_end = rng.randint(1, len(current_chunk) - 1)
                tokens_a = []
                for j in range(a_end):
                    tokens_a.extend(current_chunk[j])
                tokens_b = []
                is_random_next = False
                if len(current_chunk) == 1 or rng.random() < 0.5:
                    is_random_next = True
                    target_b_length = target_seq_length - len(tokens_a)
                    for _ in range(10):
                        random_document_index = rng.randint(0, len(all_documents) - 1)
                        if random_document_index != document_index:
                            break
                    random_document = all_documents[random_document_index]
                    random_start = rng.randint(0, len(random_document) - 1)
                    for j in range(random_start, len(random_document)):
                        tokens_b.extend(random_document[j])
                        if len(tokens_b) >= target_b_length:
                            break
                    num_unused_segments = len(current_chunk) - a_end
                    i -= num_unused_segments
                else:
                    is_random_next = False
                    for j in range(a_end, len(current_chunk)):
                        tokens_b.extend(current_chunk[j])
                reference_truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
                tokens = [2] + tokens_a + [3] + tokens_b + [3]
                instances.append((tokens, len(tokens_a) + 2, int(is_random_next)))
            current_chunk = []
            current_length = 0
        i += 1
    return instances


def test_instances_match_google_reference(corpus, tokenizer):
    """With the same random.Random, instance creation draws exactly what the original draws."""
    import random
    pd = data.PretrainingData(corpus, tokenizer, max_seq_length=48, short_seq_prob=0.3)
    documents = [[s.tolist() for s in corpus.document(i)] for i in range(corpus.num_documents())]
    ours_rng, ref_rng = random.Random(42), random.Random(42)
    for d in range(corpus.num_documents()):
        ours = pd._create_instances_from_document(d, ours_rng)
        ref = reference_instances(documents, d, 48, 0.3, ref_rng)
        assert [(t.tolist(), n, label) for t, n, label in ours] == ref
    for la, lb in [(300, 3), (3, 300), (50, 50), (1, 400)]:
        a, b = list(range(la)), list(range(1000, 1000 + lb))
        ra, rb = list(a), list(b)
        data.truncate_seq_pair(a, b, 125, random.Random(la))
        reference_truncate_seq_pair(ra, rb, 125, random.Random(la))
        assert (a, b) == (ra, rb)


# -----------------------------------------------------------------------------
# The lazy stream: instances per document as the stream reaches it, shuffled within bounded blocks


def instance_key(instance):
    tokens, len_a, label = instance
    return tuple(tokens.tolist()), len_a, label


def test_blocks_only_reorder_the_epoch(corpus, tokenizer):
    """Whatever the shuffle buffer, an epoch holds the same instances (each document's are made with its
    own RNG); a small buffer bounds the instances held at once."""
    whole = data.PretrainingData(corpus, tokenizer, max_seq_length=64, seed=13, shuffle_buffer=10 ** 9)
    small = data.PretrainingData(corpus, tokenizer, max_seq_length=64, seed=13, shuffle_buffer=50)
    for epoch in (0, 1):
        a, b = whole._epoch_instances(epoch), small._epoch_instances(epoch)
        assert sorted(map(instance_key, a)) == sorted(map(instance_key, b))
        assert [instance_key(i) for i in a] != [instance_key(i) for i in b]  # but in another order
    import random
    for _ in range(40):
        small.next_batch(32)
        epoch, start = small._block_key
        end = small._block_end
        last = small._create_instances_from_document(int(small._document_order(epoch)[end - 1]),
                                                     random.Random(f"13/{epoch}/{end - 1}"))
        # a block stops taking documents once it holds shuffle_buffer instances
        assert len(small._block) - len(last) < 50 and (end == corpus.num_documents() or len(small._block) >= 50)
    # every document's instances are in the epoch: NSP A segments come from every document
    docs_seen = {doc_of(int(t[1])) for t, _, _ in small._epoch_instances(0)}
    assert docs_seen == set(range(corpus.num_documents()))


def test_resume_mid_block_and_across_epochs_with_small_blocks(corpus, tokenizer):
    small = make_corpus([[s.tolist() for s in corpus.document(i)] for i in range(30)])
    kw = dict(max_seq_length=64, seed=14, shuffle_buffer=7)
    pd = data.PretrainingData(small, tokenizer, **kw)
    n_epoch = len(pd._epoch_instances(0))
    states, batches_seen = [], []
    for _ in range(3 * n_epoch // 10):
        states.append(pd.state_dict())
        batches_seen.append(pd.next_batch(10))
    assert len({s["block"] for s in states}) > 5 and max(s["epoch"] for s in states) >= 2
    for k in (1, 7, len(states) // 2, len(states) - 3):
        resumed = data.PretrainingData(small, tokenizer, **kw)
        resumed.load_state_dict(states[k])
        for want in batches_seen[k:k + 3]:
            got = resumed.next_batch(10)
            assert all(torch.equal(want[key], got[key]) for key in want), k


def test_a_state_saved_by_the_epoch_list_stream_resumes_at_its_count(corpus, tokenizer):
    """Checkpoints of the earlier whole-epoch stream hold only (epoch, cursor, seed): the stream goes on
    from the same number of instances into that epoch."""
    pd = data.PretrainingData(corpus, tokenizer, max_seq_length=64, seed=15, shuffle_buffer=40)
    for _ in range(5):
        pd.next_batch(16)
    old = data.PretrainingData(corpus, tokenizer, max_seq_length=64, seed=15, shuffle_buffer=40)
    old.load_state_dict({"epoch": 0, "cursor": 80, "seed": 15})
    assert old.state_dict() == pd.state_dict()
    assert torch.equal(old.next_batch(16)["input_ids"], pd.next_batch(16)["input_ids"])


def test_prefetcher_gives_the_same_batches_and_the_consumed_position(corpus, tokenizer):
    kw = dict(max_seq_length=64, seed=16, shuffle_buffer=30)
    direct = data.PretrainingData(corpus, tokenizer, **kw)
    ahead = data.Prefetcher(data.PretrainingData(corpus, tokenizer, **kw), 8, depth=3)
    try:
        for _ in range(12):
            want, got = direct.next_batch(8), ahead.next_batch()
            assert all(torch.equal(want[k], got[k]) for k in want)
            time.sleep(0.01)  # let the thread run ahead
            assert ahead.state_dict() == direct.state_dict()  # not the position of the batches made ahead
            assert ahead.data.cursor > direct.cursor or ahead.data.epoch > direct.epoch
    finally:
        ahead.close()
    broken = data.PretrainingData(corpus, tokenizer, **kw)
    broken.next_batch = lambda batch_size, masked_lm_prob=None: 1 / 0
    failing = data.Prefetcher(broken, 8)
    with pytest.raises(ZeroDivisionError):
        failing.next_batch()
    failing.close()


def test_prefetcher_masks_each_batch_at_its_scheduled_rate(corpus, tokenizer):
    kw = dict(max_seq_length=128, max_predictions_per_seq=128, seed=17)
    rates = [0.4, 0.1, 0.25]
    direct = data.PretrainingData(corpus, tokenizer, **kw)
    ahead = data.Prefetcher(data.PretrainingData(corpus, tokenizer, **kw), 8, mask_prob=lambda k: rates[k % 3])
    try:
        for k in range(6):
            want, got = direct.next_batch(8, rates[k % 3]), ahead.next_batch()
            assert all(torch.equal(want[name], got[name]) for name in want)
            lengths = got["attention_mask"].sum(1)
            expected = torch.clamp(torch.round(lengths.double() * rates[k % 3]).long(), min=1)
            assert torch.equal(got["masked_lm_weights"].sum(1).long(), expected)
    finally:
        ahead.close()


def test_prefetcher_makes_each_batch_at_its_scheduled_size(corpus, tokenizer):
    kw = dict(max_seq_length=64, seed=18)
    sizes = [3, 8, 5, 1]
    direct = data.PretrainingData(corpus, tokenizer, **kw)
    ahead = data.Prefetcher(data.PretrainingData(corpus, tokenizer, **kw), lambda k: sizes[k % 4])
    try:
        for k in range(8):
            want, got = direct.next_batch(sizes[k % 4]), ahead.next_batch()
            assert got["input_ids"].shape[0] == sizes[k % 4]
            assert all(torch.equal(want[name], got[name]) for name in want)
    finally:
        ahead.close()
