"""
Write a benchmark corpus of any size in BERT's format from real sentences: the embedded default
corpus's, recombined into documents and varied so that the corpus keeps meeting new words as it grows
(a corpus of repeated sentences would flatter the tokenizer's word cache and the vocabulary trainer).

    python bench/make_corpus.py --mb 1000 --out /tmp/corpus-1g          # 1 GB in 10 files
    python bench/make_corpus.py --mb 100 --out /tmp/c.jsonl.gz --jsonl   # JSONL, gzipped

Each document takes 5-60 sentences drawn at random; in about one sentence in three a word gets a
letter changed or is fused with another word, so new word forms appear at a steady rate (about 2% of
words), as names and rare words do in real text.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import string
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from corpus import default_corpus  # noqa: E402
from token_cache import default_cache_dir  # noqa: E402


def _vary(words: list[str], rng: random.Random, pool: list[str]) -> list[str]:
    i = rng.randrange(len(words))
    w = words[i]
    if rng.random() < 0.5 and len(w) > 3:
        j = rng.randrange(1, len(w) - 1)
        w = w[:j] + rng.choice(string.ascii_lowercase) + w[j + 1:]
    else:
        w = w.rstrip(".,;:!?") + rng.choice(pool).lower().strip(".,;:!?\"'()")
    return words[:i] + [w] + words[i + 1:]


def source_sentences(small: bool = False, cache_dir: str | None = None) -> list[str]:
    """The embedded corpus's sentences (731k words; extracted once, in about 20 s), or, small, only
    those of CPython's documentation topics (37k words, at once): enough for a smoke run."""
    if small:
        from pydoc_data.topics import topics

        from corpus import _prose_sentences
        seen: set[str] = set()
        return [s for k in sorted(topics) for s in _prose_sentences(topics[k], seen)]
    source, _ = default_corpus(cache_dir or default_cache_dir())
    return [s for d in source for s in d]


def documents(target_bytes: int, seed: int = 0, cache_dir: str | None = None, small: bool = False):
    """Documents (lists of sentences) of about target_bytes of text in all."""
    sentences = source_sentences(small, cache_dir)
    pool = [w for s in sentences[:20000] for w in s.split() if w.isalpha() and len(w) > 3]
    rng = random.Random(seed)
    written = 0
    while written < target_bytes:
        doc = []
        for _ in range(rng.randint(5, 60)):
            s = rng.choice(sentences)
            if rng.random() < 0.33:
                s = " ".join(_vary(s.split(), rng, pool))
            doc.append(s)
            written += len(s) + 1
        yield doc


def write_corpus(out: str, mb: float, files: int = 1, jsonl: bool = False, seed: int = 0,
                 cache_dir: str | None = None) -> list[str]:
    """Write about `mb` MB (of text, before compression) to `out` (a file, or a folder of `files` files).
    Below 10 MB the sentences come from the documentation topics alone (see source_sentences)."""
    target = int(mb * 1e6)
    paths = [out] if files == 1 else [os.path.join(out, f"part-{i:03d}" + (".jsonl" if jsonl else ".txt"))
                                      for i in range(files)]
    if files > 1:
        os.makedirs(out, exist_ok=True)
    docs = documents(target, seed, cache_dir, small=mb < 10)
    for k, path in enumerate(paths):
        opener = gzip.open if path.endswith(".gz") else open
        share = target // files + (target % files if k == files - 1 else 0)
        n = 0
        with opener(path, "wt", encoding="utf-8") as f:
            for doc in docs:
                if jsonl:
                    text = " ".join(doc)
                    f.write(json.dumps({"text": text}) + "\n")
                else:
                    text = "\n".join(doc) + "\n\n"
                    f.write(text)
                n += len(text)
                if n >= share:
                    break
    return paths


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    p.add_argument("--mb", type=float, required=True, help="size of the text in MB")
    p.add_argument("--out", required=True, help="a file, or a folder when --files > 1")
    p.add_argument("--files", type=int, default=1, help="number of files to spread it over")
    p.add_argument("--jsonl", action="store_true", help="a JSONL document per line instead of BERT's format")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    for path in write_corpus(args.out, args.mb, args.files, args.jsonl, args.seed):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
