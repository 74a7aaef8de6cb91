"""The README's commands are the ones CI runs, and its example agent is real."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_readme_starts_with_demo_and_test_commands() -> None:
    blocks = _bash_blocks((ROOT / "README.md").read_text())
    assert len(blocks) >= 2
    demo, tests = blocks[0].strip(), blocks[1].strip()
    assert "pip install -e ." in demo
    assert demo.endswith("trio-agents demo")
    assert "pip install -e '.[test" in tests


def test_ci_runs_the_readme_test_command() -> None:
    readme_tests = _bash_blocks((ROOT / "README.md").read_text())[1].strip()
    pytest_cmd = readme_tests.split("&&")[-1].strip()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert pytest_cmd in [line.strip() for line in ci]


def test_readme_example_agent_registers_a_session() -> None:
    code = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)[0]
    namespace: dict[str, object] = {"__name__": "readme_example"}
    exec(compile(code, "README.md", "exec"), namespace)
    server = namespace["server"]
    from trio_agents import AgentServer

    assert isinstance(server, AgentServer)
    assert server.session.agent_name == "echo"
