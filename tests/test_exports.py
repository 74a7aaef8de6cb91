"""The public surface of ``trio_agents.protocol``, and what importing it drags in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import trio_agents.protocol as protocol
from trio_agents.protocol import _events

ROOT = Path(__file__).resolve().parent.parent


def test_all_names_exist() -> None:
    missing = [name for name in protocol.__all__ if not hasattr(protocol, name)]
    assert missing == []


def test_all_is_unique() -> None:
    assert len(set(protocol.__all__)) == len(protocol.__all__)


def test_every_public_name_is_exported() -> None:
    public = {name for name in vars(protocol) if not name.startswith("_")}
    # submodules show up as attributes of the package once imported
    modules = {name for name in public if type(getattr(protocol, name)) is type(os)}
    assert public - modules == set(protocol.__all__)


def test_every_event_is_exported() -> None:
    assert set(_events.__all__) <= set(protocol.__all__)
    for name in _events.__all__:
        assert getattr(_events, name) is getattr(protocol, name)
        assert issubclass(getattr(protocol, name), protocol.Event)


BANNED = ("trio", "trio_websocket", "livekit.rtc", "livekit.api", "asyncio", "aiohttp")


def _modules_after_import(module: str, *, skip_parent_init: bool = False) -> list[str]:
    """``sys.modules`` after importing ``module`` in a fresh interpreter.

    ``skip_parent_init``: stand in an empty ``trio_agents`` package for the real
    one, so that only what ``module`` itself imports counts.
    """
    lines = ["import json, sys, types"]
    if skip_parent_init:
        lines += [
            "pkg = types.ModuleType('trio_agents')",
            f"pkg.__path__ = [{str(ROOT / 'trio_agents')!r}]",
            "sys.modules['trio_agents'] = pkg",
        ]
    lines += [f"import {module}", "print(json.dumps(sorted(sys.modules)))"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", "\n".join(lines)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    modules: list[str] = json.loads(proc.stdout)
    return modules


def _io_modules(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == b or m.startswith(b + ".") for b in BANNED)]


def test_protocol_package_is_sans_io() -> None:
    # what the protocol modules themselves import
    modules = _modules_after_import("trio_agents.protocol", skip_parent_init=True)
    assert "trio_agents.protocol._connection" in modules
    assert _io_modules(modules) == []


def test_importing_protocol_does_not_import_trio() -> None:
    # what a user gets: this includes trio_agents/__init__.py, which must then
    # not import the trio-based parts eagerly (a PEP 562 __getattr__ does it)
    modules = _modules_after_import("trio_agents.protocol")
    assert "trio_agents.protocol" in modules
    assert _io_modules(modules) == [], "importing trio_agents.protocol imported I/O libraries"


def test_the_import_check_sees_trio() -> None:
    # the checks above are only worth something if the subprocess can see trio at all
    assert [m for m in _modules_after_import("trio") if m == "trio"] == ["trio"]


def test_the_top_level_type_checking_imports_match_the_lazy_names() -> None:
    """``trio_agents/__init__.py`` keeps one list (``_LAZY``); its TYPE_CHECKING block
    repeats the names for type checkers, and must not drift from it."""
    import ast

    import trio_agents

    tree = ast.parse((ROOT / "trio_agents" / "__init__.py").read_text())
    checked: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom)
                for alias in imp.names:
                    assert alias.asname == alias.name  # an explicit re-export
                    checked[alias.name] = "." * imp.level + (imp.module or "")
    assert checked == trio_agents._LAZY
    assert trio_agents.__all__ == sorted(checked)
    for name in trio_agents.__all__:
        assert getattr(trio_agents, name) is not None
