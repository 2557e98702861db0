"""The package's promises about where things live, checked on its source: a task's name appears only
in predictors/tasks/, a backend's only in predictors/backends/ (everything else iterates over the
registries), and kserve's or uvicorn's non-public names only in predictors/serving/seams.py."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from predictors.backends import BACKENDS
from predictors.tasks import TASKS

PACKAGE = Path(__file__).resolve().parents[2] / "predictors"

#: String constants that equal a registry name but mean something else, with why.
OTHER_MEANINGS = {
    ("model/files.py", "onnx"): "the onnx package, in the list of library versions a build records",
    ("deploy/validation/kserve_rules.py", "onnx"): "KServe's modelFormat name, in its list of formats",
    ("serving/transport/openai_api.py", "embedding"): "OpenAI's object type of a vector in its embeddings API",
    ("deploy/validation/kserve_rules.py", "sklearn"): "KServe's modelFormat name, in its list of formats",
}


def string_constants(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = {
        id(node.body[0].value) for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


@pytest.mark.parametrize("registry, home", [(TASKS, "tasks"), (BACKENDS, "backends")])
def test_registry_names_appear_only_in_their_own_package(registry, home):
    names = set(registry)
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith(f"{home}/"):
            continue
        found += [f"{relative}:{line} {value!r}" for line, value in string_constants(path)
                  if value in names and (relative, value) not in OTHER_MEANINGS]
    assert not found, f"names of the {home} registry outside predictors/{home}/: {found}"


def test_no_module_branches_on_a_task_or_backend_name():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and any(
                isinstance(side, ast.Attribute) and side.attr in ("task", "backend") for side in (node.left, *node.comparators)
            ) and not relative.startswith(("tasks/", "backends/", "model/")):
                found.append(f"{relative}:{node.lineno}")
    assert not found, f"comparisons with a model's task or backend outside their packages: {found}"


def test_private_names_of_kserve_and_uvicorn_are_used_in_the_seam_module_only():
    private = ("_raw_data", "_server", "_kwargs", "_port", "_data_plane", "_add_middlewares", "_add_exception_handlers",
               "_rest_server", "_grpc_server", "_serve")
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative == "serving/seams.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in private:
                found.append(f"{relative}:{node.lineno} .{node.attr}")
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("uvicorn.protocols"):
                found.append(f"{relative}:{node.lineno} from {node.module}")
    assert not found, f"non-public kserve/uvicorn names outside predictors/serving/seams.py: {found}"
