"""
Prepare a pretraining corpus ahead of training: train (or take) the vocabulary and tokenise the corpus
in parallel into the memory-mapped cache that train_mlm.py then opens in seconds.

    python prepare_data.py --data corpus/ --workers 16                 # e.g. on a CPU box before a GPU job
    python prepare_data.py --data 'wiki/*.jsonl.gz' --vocab bert-base-uncased/vocab.txt --cache-dir cache
    python train_mlm.py --data corpus/ ...                              # the same data, vocabulary and cache flags

train_mlm.py --data prepares a corpus by itself when it is not prepared yet: this command is that step
alone. The cache is keyed by the files (paths, sizes, modification times), the vocabulary and the casing,
so train_mlm.py finds it when given the same --data, --vocab (or --vocab-size/--vocab-sample), --cased
and --cache-dir.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from cli import ArgumentParser, HelpFormatter, run_cli
from token_cache import default_cache_dir, default_workers, prepare_pretraining_corpus
from tokenization import vocab_size_problem


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n\n")[0].strip(), formatter_class=HelpFormatter)
    p.add_argument("--data", nargs="+", metavar="PATH",
                   help="corpus files, folders or glob patterns (.txt in BERT's format, plain prose or WikiText; "
                        ".jsonl; .parquet; any of them .gz); default: the embedded corpus")
    p.add_argument("--text-field", default="text", help="the JSONL key / Parquet column holding a document's text")
    p.add_argument("--vocab", metavar="FILE", help="an existing vocab.txt; default: train one on a sample of the corpus")
    p.add_argument("--vocab-size", type=int, default=8192, help="size of the vocabulary to train")
    p.add_argument("--vocab-sample", type=float, default=50,
                   help="MB of the corpus, spread over all of it, to train the vocabulary on")
    p.add_argument("--cased", action="store_true", help="keep case and accents (default: lower-case, strip accents)")
    p.add_argument("--cache-dir", default=default_cache_dir(), help="where the prepared corpus is written")
    p.add_argument("--workers", type=int, default=default_workers(), help="tokenising processes (default: one per CPU)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    for name in ("vocab_size", "vocab_sample", "workers"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if vocab_size_problem(args.vocab_size, not args.cased):
        p.error(vocab_size_problem(args.vocab_size, not args.cased))
    # SIGTERM stops as Ctrl-C does: nothing half-prepared is kept, in the cache or the system's temporary folder
    return run_cli(lambda: prepare(args), interrupted="interrupted: nothing of this preparation was kept", sigterm=True)


def prepare(args: argparse.Namespace) -> int:
    vocab_file, _, corpus, _ = prepare_pretraining_corpus(
        args.data, args.cache_dir, args.vocab, args.vocab_size, not args.cased, args.vocab_sample,
        args.text_field, args.workers)
    m = corpus.info
    if corpus.from_cache:
        print(f"already prepared: {corpus.folder}", file=sys.stderr)
    print(f"corpus: {m['documents']:,} documents, {m['sentences']:,} sentences, {m['words']:,} words, "
          f"{m['tokens']:,} tokens\nvocabulary: {vocab_file}\ncache: {corpus.folder}")
    flags = (["--data", *args.data] if args.data else []) + (["--vocab", args.vocab] if args.vocab else []) \
        + (["--text-field", args.text_field] if args.text_field != "text" else []) \
        + (["--cased"] if args.cased else []) + ["--cache-dir", args.cache_dir]
    if not args.vocab and (args.vocab_size, args.vocab_sample) != (8192, 50):
        flags += ["--vocab-size", str(args.vocab_size), "--vocab-sample", f"{args.vocab_sample:g}"]
    print(f"train on it: python train_mlm.py {shlex.join(flags)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
