"""The package declares what it imports, and says what it is."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "trio_agents"

#: Modules that only load with an extra installed, and that extra.
OPTIONAL = {
    "testing/pytest_plugin.py": "testing",  # loaded by pytest itself
    "testing/strategies.py": "testing",  # needs hypothesis; says so if missing
}


def _imported_top_level_names(only: str | None = None) -> set[str]:
    """Third-party top-level names imported by the core modules, or by ``only``."""
    names: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).as_posix()
        if (relative != only) if only else relative in OPTIONAL:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"trio_agents", "__future__"}


def _declared(extra: str | None = None) -> set[str]:
    requires = importlib.metadata.requires("trio-agents") or []
    wanted = [
        r
        for r in requires
        if "extra ==" not in r
        or (extra is not None and re.search(rf"extra == [\"']{extra}[\"']", r))
    ]
    return {re.split(r"[\s;<>=!~\[]", r, maxsplit=1)[0].lower().replace("_", "-") for r in wanted}


def test_every_third_party_import_is_a_declared_dependency() -> None:
    dists = importlib.metadata.packages_distributions()
    declared = _declared()
    missing = {}
    for name in sorted(_imported_top_level_names()):
        owners = {d.lower().replace("_", "-") for d in dists.get(name, [name])}
        if not owners & declared:
            missing[name] = sorted(owners)
    assert missing == {}, f"imported but not declared in [project].dependencies: {missing}"


def test_optional_modules_import_only_their_extra() -> None:
    dists = importlib.metadata.packages_distributions()
    for module, extra in OPTIONAL.items():
        assert (PACKAGE / module).exists(), module
        declared = _declared(extra)
        missing = {}
        for name in sorted(_imported_top_level_names(only=module)):
            owners = {d.lower().replace("_", "-") for d in dists.get(name, [name])}
            if not owners & declared:
                missing[name] = sorted(owners)
        assert missing == {}, f"{module} imports what the {extra!r} extra lacks: {missing}"


def test_the_pytest_plugin_is_registered() -> None:
    points = importlib.metadata.entry_points(group="pytest11")
    ours = [p for p in points if p.dist is not None and p.dist.name == "trio-agents"]
    assert [p.value for p in ours] == ["trio_agents.testing.pytest_plugin"]


def test_metadata_names_the_license_and_the_trio_framework() -> None:
    meta = importlib.metadata.metadata("trio-agents")
    assert meta["License-Expression"] == "Apache-2.0"
    classifiers = meta.get_all("Classifier") or []
    assert "Framework :: Trio" in classifiers
    assert "Typing :: Typed" in classifiers
    assert (PACKAGE.parent / "LICENSE").read_text().lstrip().startswith("Apache License")
    assert (PACKAGE / "py.typed").exists()
