"""Only other libraries' public names: an upgrade that moves a private one breaks nothing here.

Scanned: the product, the tools and the tests. Flagged: imports of ``dagster._…`` or
``ray._private``; reading or setting ``obj._name`` where ``_name`` is not one of this project's
own names; a class of ours that overrides a private method of another library's base class.
"""

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import audio_pipeline

REPO = Path(__file__).resolve().parents[1]
TREES = ("audio_pipeline", "tools", "audio_pipeline_tests")
PRIVATE_MODULE = re.compile(r"\b(dagster\._|ray\._private)")


def _sources():
    for tree in TREES:
        for path in sorted((REPO / tree).rglob("*.py")):
            yield path.relative_to(REPO).as_posix(), path.read_text()


def _own_private_names() -> set[str]:
    names = set()
    for _, text in _sources():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
    return {n for n in names if n.startswith("_")}


def test_no_private_modules_of_other_libraries():
    found = []
    for rel, text in _sources():
        if rel == "audio_pipeline_tests/test_public_apis.py":
            continue
        for match in PRIVATE_MODULE.finditer(text):
            line = text[: match.start()].count("\n") + 1
            snippet = text.splitlines()[line - 1].strip()
            found.append(f"{rel}:{line}: {snippet}")
    assert not found, "private modules of other libraries:\n" + "\n".join(found)


def test_no_underscore_attributes_of_other_libraries():
    own = _own_private_names()
    found = []
    for rel, text in _sources():
        if rel == "audio_pipeline_tests/test_public_apis.py":
            continue
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.Attribute):
                continue
            name = node.attr
            if not name.startswith("_") or (name.startswith("__") and name.endswith("__")):
                continue
            if name not in own:
                found.append(f"{rel}:{node.lineno}: .{name}")
    assert not found, "underscore attributes of other libraries:\n" + "\n".join(found)


def test_no_class_overrides_a_private_method_of_another_library():
    found = set()
    for info in pkgutil.walk_packages(audio_pipeline.__path__, "audio_pipeline."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if not cls.__module__.startswith("audio_pipeline"):
                continue
            foreign = [b for b in cls.__mro__[1:] if not b.__module__.startswith("audio_pipeline")]
            for name, value in vars(cls).items():
                if not name.startswith("_") or name.startswith("__"):
                    continue
                method = isinstance(value, classmethod | staticmethod | property)
                method = method or inspect.isfunction(value)
                if method and any(name in vars(base) for base in foreign):
                    found.add(f"{cls.__module__}.{cls.__name__}.{name}")
    assert not found, "overrides of other libraries' private methods:\n" + "\n".join(sorted(found))
