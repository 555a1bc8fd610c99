import os
import sys

import pytest

# The scripts live at the top level (no package): make them importable from bench/.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pytest_sessionstart(session):
    session.config.loadavg_start = os.getloadavg()
    threads = session.config.getoption("bench_threads", None)
    if threads:
        import torch
        torch.set_num_threads(threads)


def pytest_benchmark_update_machine_info(config, machine_info):
    """What a reader needs to judge the numbers: the torch build, the GPU, and how busy the machine
    was (other processes on the same cores slow every case down)."""
    import torch
    machine_info["torch"] = torch.__version__
    machine_info["torch_threads"] = torch.get_num_threads()
    machine_info["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    machine_info["loadavg_start"] = [round(x, 1) for x in getattr(config, "loadavg_start", os.getloadavg())]
    machine_info["loadavg_end"] = [round(x, 1) for x in os.getloadavg()]


def pytest_addoption(parser):
    parser.addoption("--bench-large", action="store_true", default=False,
                     help="also run the sizes that take minutes on a CPU (base preset on CPU, "
                          "attention at 2048)")
    # On a machine shared with other jobs, torch's threads spin-wait for each other whenever one
    # of them is descheduled: a 2-thread step can take 4x longer than a 1-thread one. Pinning the
    # thread count (usually to 1) keeps such numbers repeatable; say so when quoting them.
    parser.addoption("--bench-corpus-mb", default="2",
                     help="comma-separated corpus sizes in MB for bench/test_corpus_scale.py (docs/data.md: 100,1000)")
    parser.addoption("--bench-small-files", type=int, default=2000,
                     help="number of 1 KB files for the many-small-files case of bench/test_corpus_scale.py "
                          "(docs/data.md: 100000)")
    parser.addoption("--bench-long-line-mb", type=float, default=2,
                     help="MB of the one-line JSONL document of bench/test_corpus_scale.py (docs/data.md: 200)")
    parser.addoption("--bench-threads", type=int, default=None,
                     help="torch.set_num_threads for the whole run (default: torch's choice)")


@pytest.fixture(scope="session")
def measured() -> dict:
    """Best times of the baselines (naive attention, transformers) so that the case measured
    right after them can record its speed ratio: both come from the same run on the same machine."""
    return {}


@pytest.fixture
def large(request) -> bool:
    return request.config.getoption("bench_large", False)  # absent if pytest started elsewhere


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """Python's own documentation as a small corpus (on every Python, no download): documents of
    sentences, a WordPiece vocabulary of 8192 trained on them, and the tokenizer."""
    from pydoc_data.topics import topics

    import data
    documents = [data.split_sentences(text) for text in topics.values()]
    vocab_file = str(tmp_path_factory.mktemp("vocab") / "vocab.txt")
    data.train_wordpiece_vocab([s for d in documents for s in d], 8192, vocab_file)
    return documents, data.BertTokenizer(vocab_file, do_lower_case=True)


@pytest.fixture(autouse=True)
def one_thread_when_smoke(request):
    """The smoke run (--benchmark-disable) measures nothing, so it runs on one thread: on a busy
    machine that is several times faster than threads spin-waiting for a descheduled partner."""
    import torch
    if not request.config.getoption("benchmark_disable") or request.config.getoption("bench_threads", None):
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


from pytest_benchmark.fixture import BenchmarkFixture  # noqa: E402


class SmokeTimed(BenchmarkFixture):
    """pytest-benchmark's fixture, except that with --benchmark-disable the one call it makes is timed
    (smoke_seconds), so that the cases compute their figures in CI too."""

    smoke_seconds = None

    def _timed(self, call):
        import time
        t0 = time.perf_counter()
        result = call()
        if not self.enabled:
            self.smoke_seconds = time.perf_counter() - t0
        return result

    def pedantic(self, target, args=(), kwargs=None, setup=None, **options):
        if not self.enabled and setup is not None:  # as pedantic does: setup may give the arguments
            made = setup()
            args, kwargs = made if made is not None else (args, kwargs)
            setup = None
        return self._timed(lambda: super(SmokeTimed, self).pedantic(target, args=args, kwargs=kwargs, setup=setup,
                                                                    **options))

    def __call__(self, function, *args, **kwargs):
        return self._timed(lambda: super(SmokeTimed, self).__call__(function, *args, **kwargs))


SMOKE_RESULTS: list[dict] = []  # (group, extra_info) of every case of this session, for test_zz_summary.py


@pytest.fixture
def benchmark(benchmark):
    benchmark.__class__ = SmokeTimed  # the same object, with the timed smoke call
    yield benchmark
    info = dict(benchmark.extra_info)
    if info:
        for key, value in info.items():  # every figure a case records is finite and positive
            if isinstance(value, float):
                import math
                assert math.isfinite(value) and value > 0, (benchmark.name, key, value)
        SMOKE_RESULTS.append({"group": benchmark.group, "name": benchmark.name, "extra_info": info})
