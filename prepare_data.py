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

from cli import ArgumentParser, HelpFormatter, not_positive, run_cli
from token_cache import add_corpus_flags, prepare_pretraining_corpus
from tokenization import vocab_size_problem


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n\n")[0].strip(), formatter_class=HelpFormatter)
    add_corpus_flags(p)  # train_mlm.py's own corpus flags, defaults included: what this prepares, it finds
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    problem = not_positive(vars(args), ("vocab_size", "vocab_sample", "workers")) \
        or vocab_size_problem(args.vocab_size, not args.cased)
    if problem:
        p.error(problem)
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
    print(f"train on it: python train_mlm.py {shlex.join(corpus_flags(args))}")
    return 0


def corpus_flags(args: argparse.Namespace) -> list[str]:
    """The flags that find this corpus again: those given a value other than their default."""
    defaults, flags = build_parser(), ["--data", *args.data] if args.data else []
    names = ["vocab"] if args.vocab else ["vocab_size", "vocab_sample"]
    for name in ["text_field", *names, "cased", "cache_dir"]:
        value = getattr(args, name)
        if value != defaults.get_default(name) or name == "cache_dir":
            flag = "--" + name.replace("_", "-")
            flags += [flag] if value is True else [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return flags


if __name__ == "__main__":
    sys.exit(main())
