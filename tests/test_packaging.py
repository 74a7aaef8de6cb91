"""The package declares what it imports, and says what it is."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "trio_agents"


def _imported_top_level_names() -> set[str]:
    names: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"trio_agents", "__future__"}


def _declared() -> set[str]:
    requires = importlib.metadata.requires("trio-agents") or []
    core = [r for r in requires if "extra ==" not in r]
    return {re.split(r"[\s;<>=!~\[]", r, maxsplit=1)[0].lower().replace("_", "-") for r in core}


def test_every_third_party_import_is_a_declared_dependency() -> None:
    dists = importlib.metadata.packages_distributions()
    declared = _declared()
    missing = {}
    for name in sorted(_imported_top_level_names()):
        owners = {d.lower().replace("_", "-") for d in dists.get(name, [name])}
        if not owners & declared:
            missing[name] = sorted(owners)
    assert missing == {}, f"imported but not declared in [project].dependencies: {missing}"


def test_metadata_names_the_license_and_the_trio_framework() -> None:
    meta = importlib.metadata.metadata("trio-agents")
    assert meta["License-Expression"] == "Apache-2.0"
    classifiers = meta.get_all("Classifier") or []
    assert "Framework :: Trio" in classifiers
    assert "Typing :: Typed" in classifiers
    assert (PACKAGE.parent / "LICENSE").read_text().lstrip().startswith("Apache License")
    assert (PACKAGE / "py.typed").exists()
