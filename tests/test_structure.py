"""The code's shape, kept by tests: every import names the module that defines the name, no entry point
imports another, cli.py and files.py import no torch, each file says its one job first, and no function
runs past a page (about 60 lines) but train(), the algorithm on one page."""

import ast
import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = {os.path.basename(f)[:-3]: f for f in glob.glob(os.path.join(ROOT, "*.py"))}
ENTRY_POINTS = {"train_mlm", "finetune_cls", "finetune_ner", "prepare_data"}


def tree(name: str) -> ast.Module:
    with open(MODULES[name], encoding="utf-8") as f:
        return ast.parse(f.read())


def defined(name: str) -> set[str]:
    """The names a module defines itself (functions, classes, assignments), not those it imports."""
    names = set()
    for node in tree(name).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


def project_imports(path: str) -> list[ast.ImportFrom]:
    with open(path, encoding="utf-8") as f:
        return [n for n in ast.walk(ast.parse(f.read())) if isinstance(n, ast.ImportFrom) and n.module in MODULES]


@pytest.mark.parametrize("path", sorted([*MODULES.values(), *glob.glob(os.path.join(ROOT, "tests", "*.py")),
                                         *glob.glob(os.path.join(ROOT, "bench", "*.py"))]),
                         ids=lambda p: os.path.relpath(p, ROOT))
def test_every_import_names_the_module_that_defines_the_name(path):
    wrong = [(node.module, alias.name) for node in project_imports(path) for alias in node.names
             if alias.name not in defined(node.module)]
    assert not wrong, wrong


def test_no_entry_point_imports_another_and_the_command_line_layer_imports_no_torch():
    for name in MODULES:
        imported = {node.module for node in project_imports(MODULES[name])}
        imported |= {alias.name for node in ast.walk(tree(name)) if isinstance(node, ast.Import) for alias in node.names}
        assert not (imported & ENTRY_POINTS) - {name}, name
        if name in ("cli", "files"):
            assert not any(m == "torch" or m.startswith("torch.") for m in imported), name


def test_each_file_says_its_job_in_its_first_docstring_line():
    for name in MODULES:
        doc = ast.get_docstring(tree(name))
        assert doc and len(doc.split("\n\n")[0]) > 20, name


def test_no_function_runs_past_a_page_but_train():
    long = [(name, node.name, node.end_lineno - node.lineno + 1) for name in MODULES for node in ast.walk(tree(name))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 62
            and (name, node.name) != ("train_mlm", "train")]
    assert not long, long


def test_the_bad_input_counts_in_the_reliability_page_are_the_tables():
    import test_bad_input
    import test_finetune_cls
    import test_finetune_ner
    with open(os.path.join(ROOT, "docs", "reliability.md"), encoding="utf-8") as f:
        page = f.read()
    said = re.search(r"(\d+) cases for `train_mlm.py`, (\d+) for `prepare_data.py`, (\d+) for `finetune_cls.py`, "
                     r"(\d+) for `finetune_ner.py`", page)
    assert said, "the bad-input row of docs/reliability.md"
    assert [int(n) for n in said.groups()] == [len(test_bad_input.TRAIN_CASES), len(test_bad_input.PREPARE_CASES),
                                               len(test_finetune_cls.BAD_INPUT_CASES), len(test_finetune_ner.BAD)]
