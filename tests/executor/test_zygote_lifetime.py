"""The zygote lives as long as its worker, not as long as trio's thread that started it.

trio starts subprocesses from a worker thread and retires idle worker threads
after 10 s; a parent-death signal in the zygote would fire then, killing the
zygote and every job process forked from it.
"""

from __future__ import annotations

import executor_agents
import psutil
import trio
from executor_helpers import dispatch, running_worker, wait_terminal
from livekit.protocol import agent


async def test_zygote_and_a_running_job_outlive_trios_idle_threads() -> None:
    async with running_worker(num_idle_processes=0) as (server, worker):
        zygote_pid = worker._executor._zygote.pid
        assert zygote_pid is not None
        record = await dispatch(server, "long-lived", executor_agents.metadata("wait"))
        await trio.sleep(12)  # past trio's 10 s idle-thread timeout
        assert psutil.pid_exists(zygote_pid)
        assert worker._executor._zygote.pid == zygote_pid
        assert record.status == agent.JS_RUNNING
        assert [j.job.id for j in worker.active_jobs] == [record.job.id]
        # the zygote still forks: a second job runs beside the first
        second = await dispatch(server, "after-idle", executor_agents.metadata("wait"))
        assert second.worker_id == worker.worker_id
        with trio.fail_after(15):
            for job in (record, second):
                assert server.agents.terminate(job.job.id)
                ended = await wait_terminal(server, job)
                assert ended.status == agent.JS_SUCCESS, ended.error
