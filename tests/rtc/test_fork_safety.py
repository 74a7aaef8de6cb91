"""Fork safety: the zygote never forks job processes from a process running the SDK."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import rtc_at_import_agent
import trio

from trio_agents import AgentServer, JobExecutorType, WorkerError


async def test_a_zygote_whose_agent_module_starts_the_sdk_refuses_to_fork(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(rtc_at_import_agent.FLAG, "1")  # the zygote inherits it
    worker = AgentServer(
        "ws://127.0.0.1:9", "key", "secret", job_executor_type=JobExecutorType.PROCESS, port=None
    )
    worker.rtc_session(rtc_at_import_agent.entry)
    with trio.fail_after(60), pytest.raises(WorkerError) as info:
        await worker.run(handle_signals=False)
    message = str(info.value)
    assert "native client" in message
    assert "entrypoint" in message


def test_native_threads_are_seen_once_the_sdk_started() -> None:
    script = textwrap.dedent(
        """
        import asyncio
        from trio_agents._executor._zygote import livekit_native_threads
        before = livekit_native_threads()
        import livekit.rtc as rtc
        after_import = livekit_native_threads()
        rtc.AudioSource(48000, 1, loop=asyncio.new_event_loop())
        print(before, after_import, bool(livekit_native_threads()))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    # importing the SDK starts nothing; the first SDK object does
    assert out.strip() == "[] [] True"
