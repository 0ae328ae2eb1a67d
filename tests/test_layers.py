"""The layering, checked on the sources: the core (the store, its model and scripts, retention,
migration, ...) is a library that imports no web framework, task queue or command-line toolkit,
and never the adapters built on it; the web app imports no task queue internals or click, the
workers no Flask or click. Every import counts, inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

#: The command line: the ``psd`` command, its subcommands and what only they use.
CLI = frozenset({"psd.cli"})
WEB, WORKERS = "psd.web", "psd.workers"
FLASK = frozenset({"flask", "werkzeug"})
CELERY = frozenset({"celery", "celery_batches", "kombu"})
CLICK = frozenset({"click"})


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path) -> set[str]:
    """Every module ``path`` imports, absolute (``from a import b`` counts ``a`` and ``a.b``)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            parent = ".".join(base) if node.level else ""
            module = ".".join(p for p in (parent, node.module or "") if p)
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def within(module: str, packages: frozenset[str] | set[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def forbidden(module: str) -> frozenset[str]:
    """What ``module`` must not import."""
    if within(module, {WEB}):
        return CELERY | CLICK
    if within(module, {WORKERS}):
        return FLASK | CLICK
    if within(module, CLI):
        return frozenset()
    return FLASK | CELERY | CLICK | {WEB, WORKERS} | CLI


def violations(root: Path) -> list[str]:
    """``module imports name`` for every import that breaks a rule, under ``root``."""
    found = []
    for path in sorted((root / "psd").rglob("*.py")):
        module = module_name(path, root)
        banned = forbidden(module)
        found += [
            f"{module} imports {name}"
            for name in sorted(imports(path, root))
            if within(name, banned)
        ]
    return found


def test_the_layers_keep_their_imports() -> None:
    assert (SRC / "psd" / "store.py").exists()
    found = violations(SRC)
    assert not found, "\n".join(found)


def test_every_kind_of_import_is_seen(tmp_path: Path) -> None:
    """The scan itself can fail: each planted import breaks a rule."""
    planted = {
        "psd/__init__.py": "",
        "psd/store.py": "def f():\n    import click\n",
        "psd/reads.py": "from .web import create_app\nfrom psd.cli import ops\n",
        "psd/web/__init__.py": "from celery import Celery\n",
        "psd/web/v1.py": "from ..workers.app import create_app\nfrom . import handlers\n",
        "psd/workers/__init__.py": "import flask.json\n",
        "psd/cli/__init__.py": "import click, flask, celery\nfrom psd.web import create_app\n",
    }
    for name, text in planted.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert violations(tmp_path) == [
        "psd.reads imports psd.cli",
        "psd.reads imports psd.cli.ops",
        "psd.reads imports psd.web",
        "psd.reads imports psd.web.create_app",
        "psd.store imports click",
        "psd.web imports celery",
        "psd.web imports celery.Celery",
        "psd.workers imports flask.json",
    ]
