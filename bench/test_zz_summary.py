"""bench/summary.py on this session's results (named to run last): every table it prints is built from
figures the cases recorded, in the smoke run (CI) as when timing."""

import json

import pytest

import summary
from conftest import SMOKE_RESULTS

HEADERS = {"pretraining": "### Pretraining step", "attention": "### Attention", "finetune": "### Classification",
           "data": "### Data pipeline", "adamw": "### AdamW step", "corpus": "### Corpus scale"}


def test_summary_tables_from_this_run(tmp_path, capsys):
    if not SMOKE_RESULTS:
        pytest.skip("no benchmark ran in this session")
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"machine_info": {"cpu": {"brand_raw": "test", "count": 2}, "torch": "x"},
                                "datetime": "2026-01-01T00:00:00", "benchmarks": SMOKE_RESULTS}))
    summary.main(str(path))
    out = capsys.readouterr().out
    groups = {r["group"] for r in SMOKE_RESULTS}
    for group in groups & set(HEADERS):
        assert HEADERS[group] in out, group
    if any(r["extra_info"].get("what") == "prepare small files" for r in SMOKE_RESULTS):
        assert "### Corpus preparation: many small files" in out
    tables = [line for line in out.splitlines() if line.startswith("| ") and "nan" in line.lower()]
    assert not tables, tables
