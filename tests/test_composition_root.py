"""The composition root: every long-lived resource is started and stopped from ``gateway.app``.

Route modules only add routes. A module that appends its own cleanup context (or shutdown
signal) makes the start-up order follow route registration instead of one readable list.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parent.parent
COMPOSITION_ROOT = ROOT / "gateway" / "app.py"
#: aiohttp's lifecycle lists: only the composition root may add to them
LIFECYCLE = frozenset({"cleanup_ctx", "on_startup", "on_shutdown", "on_cleanup"})


def _lifecycle_additions(path: Path) -> list[tuple[int, str]]:
    """(line, list) of every ``<x>.cleanup_ctx.append(...)`` (or extend/insert, or another
    lifecycle list, or ``+=``) in ``path``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        target = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("append", "extend", "insert"):
            target = node.func.value
        elif isinstance(node, ast.AugAssign):
            target = node.target
        if isinstance(target, ast.Attribute) and target.attr in LIFECYCLE:
            found.append((node.lineno, target.attr))
    return sorted(found)


def test_only_the_composition_root_adds_lifecycle_contexts():
    files = sorted([*(ROOT / "gateway").rglob("*.py"), *(ROOT / "plugins").rglob("*.py")])
    assert COMPOSITION_ROOT in files and len(files) > 100
    outside = [
        f"{f.relative_to(ROOT)}:{line}: adds to {name}"
        for f in files
        if f != COMPOSITION_ROOT
        for line, name in _lifecycle_additions(f)
    ]
    assert not outside, "start long-lived resources from gateway/app.py only (route modules add routes):\n" + "\n".join(outside)
    assert len([n for _, n in _lifecycle_additions(COMPOSITION_ROOT) if n == "cleanup_ctx"]) >= 15


def test_the_scan_catches_every_way_of_adding(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "def setup(app):\n"
        "    app.cleanup_ctx.append(ctx)\n"
        "    app.on_shutdown.insert(0, close)\n"
        "    app.on_startup.extend([a, b])\n"
        "    app.on_cleanup += [c]\n"
        "    app.router.add_get('/x', h)\n"
        "    routes.append(r)\n"
    )
    assert _lifecycle_additions(bad) == [(2, "cleanup_ctx"), (3, "on_shutdown"), (4, "on_startup"), (5, "on_cleanup")]
