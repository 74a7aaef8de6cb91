"""Snippets that are whole user test files, run as a user would (pytester, trio_mode):
the home page's quickstart (agent.py, test_agent.py) and the testing guide's unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

SNIPPETS = Path(__file__).resolve().parents[2] / "docs" / "snippets"
QUICKSTART = SNIPPETS / "quickstart"
TESTING = SNIPPETS / "testing"


def test_the_quickstart_test_passes(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    for name in ("agent.py", "test_agent.py"):
        (pytester.path / name).write_text((QUICKSTART / name).read_text())
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "ignore")
    result.assert_outcomes(passed=1)


def test_the_quickstart_test_catches_a_wrong_greeting(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    agent = (QUICKSTART / "agent.py").read_text()
    assert 'f"hello {participant.identity}"' in agent
    (pytester.path / "agent.py").write_text(agent.replace('f"hello {', 'f"hi {'))
    (pytester.path / "test_agent.py").write_text((QUICKSTART / "test_agent.py").read_text())
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "ignore")
    result.assert_outcomes(failed=1)


def test_the_testing_guides_unit_tests_pass(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    (pytester.path / "test_units.py").write_text((TESTING / "test_units.py").read_text())
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "ignore")
    result.assert_outcomes(passed=3)
