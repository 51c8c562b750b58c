"""The package list in pyproject.toml is written by hand (plugins/ installs as
citygate_plugins); this keeps it complete."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_every_package_folder_is_listed_in_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(project["tool"]["setuptools"]["packages"])
    found = set()
    for top, name in (("gateway", "gateway"), ("plugins", "citygate_plugins")):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top)
            found.add(".".join((name, *rel.parts)))
    assert found == listed, f"missing: {sorted(found - listed)}; stale: {sorted(listed - found)}"


def test_builtin_plugins_are_entry_points():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for name, target in project["project"]["entry-points"]["gateway"].items():
        module = target.replace("citygate_plugins.", "plugins/").replace(".", "/") + ".py"
        assert (ROOT / module).is_file(), f"entry point {name} -> {target}: {module} does not exist"
