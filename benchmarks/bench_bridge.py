"""Benchmark of the asyncio bridge (``trio_agents.rtc.open_asyncio_bridge``).

    python benchmarks/bench_bridge.py [--events 100000] [--samples 2000] [--runs 3]

No server.  Measured, each ``--runs`` times:

* events/s loop -> trio: a task on the bridge's asyncio loop puts ``--events``
  items into an ``EventPipe`` (as the livekit backend's SDK event handlers
  do), trio reads them in batches; from the first put to the last item read;
* events/s foreign thread -> trio: the same from a plain Python thread (as the
  SDK's native callback threads would, were they to put directly);
* one crossing asyncio -> trio: ``--samples`` single items, each put on the
  loop thread 1 ms after the previous one was read, stamped with
  ``time.perf_counter()`` when put; the latency is read time - put time
  (p50/p99, microseconds);
* one round trip trio -> asyncio -> trio: ``await bridge.run(coro_fn)`` of a
  coroutine function that returns at once (p50/p99, microseconds).

Prints a markdown table and writes the numbers as JSON to ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import trio

from trio_agents.rtc._bridge import EventPipe, new_pipe, open_asyncio_bridge

RESULTS = Path(__file__).resolve().parent / "results"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def events_from_loop(n: int) -> float:
    async with open_asyncio_bridge() as bridge:
        pipe: EventPipe[int] = new_pipe(n + 1, "bench")

        async def produce() -> None:
            for i in range(n):
                pipe.put(i)
                if i % 1000 == 999:
                    await asyncio.sleep(0)  # let the loop breathe, as SDK handlers do
            pipe.close()

        start = time.perf_counter()
        await bridge.run_sync(lambda: bridge.spawn(produce()))
        count = 0
        while True:
            try:
                count += len(await pipe.get_batch())
            except trio.EndOfChannel:
                break
        elapsed = time.perf_counter() - start
        assert count == n, count
        assert pipe.dropped == 0
        return n / elapsed


async def events_from_thread(n: int) -> float:
    pipe: EventPipe[int] = new_pipe(n + 1, "bench")

    def produce() -> None:
        for i in range(n):
            pipe.put(i)
        pipe.close()

    start = time.perf_counter()
    thread = threading.Thread(target=produce)
    thread.start()
    count = 0
    while True:
        try:
            count += len(await pipe.get_batch())
        except trio.EndOfChannel:
            break
    elapsed = time.perf_counter() - start
    thread.join()
    assert count == n
    assert pipe.dropped == 0
    return n / elapsed


async def one_way_latency(samples: int) -> list[float]:
    async with open_asyncio_bridge() as bridge:
        pipe: EventPipe[float] = new_pipe(16, "bench")
        out: list[float] = []
        for _ in range(samples):
            bridge.call_soon(lambda: pipe.put(time.perf_counter()))
            batch = await pipe.get_batch()
            out.append((time.perf_counter() - batch[0]) * 1e6)
            await trio.sleep(0.001)
        return out


async def round_trip(samples: int) -> list[float]:
    async with open_asyncio_bridge() as bridge:

        async def nothing() -> None:
            return None

        await bridge.run(nothing)  # start the thread
        out: list[float] = []
        for _ in range(samples):
            start = time.perf_counter()
            await bridge.run(nothing)
            out.append((time.perf_counter() - start) * 1e6)
        return out


async def main(args: argparse.Namespace) -> dict[str, Any]:
    runs: list[dict[str, float]] = []
    for _ in range(args.runs):
        loop_rate = await events_from_loop(args.events)
        thread_rate = await events_from_thread(args.events)
        one_way = await one_way_latency(args.samples)
        rtt = await round_trip(args.samples)
        runs.append(
            {
                "events_per_s_loop_to_trio": loop_rate,
                "events_per_s_thread_to_trio": thread_rate,
                "one_way_us_p50": statistics.median(one_way),
                "one_way_us_p99": percentile(one_way, 0.99),
                "round_trip_us_p50": statistics.median(rtt),
                "round_trip_us_p99": percentile(rtt, 0.99),
            }
        )
    return {"runs": runs}


def machine() -> dict[str, Any]:
    import livekit.rtc

    return {
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "trio": trio.__version__,
        "livekit": livekit.rtc.__version__,
    }


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    result = trio.run(main, args)
    result["machine"] = machine()
    result["args"] = vars(args)
    keys = [
        ("events_per_s_loop_to_trio", "events/s, asyncio loop -> trio", "{:,.0f}"),
        ("events_per_s_thread_to_trio", "events/s, foreign thread -> trio", "{:,.0f}"),
        ("one_way_us_p50", "one crossing asyncio -> trio, p50 (µs)", "{:.0f}"),
        ("one_way_us_p99", "one crossing asyncio -> trio, p99 (µs)", "{:.0f}"),
        ("round_trip_us_p50", "round trip trio -> asyncio -> trio, p50 (µs)", "{:.0f}"),
        ("round_trip_us_p99", "round trip trio -> asyncio -> trio, p99 (µs)", "{:.0f}"),
    ]
    print("| metric | " + " | ".join(f"run {i + 1}" for i in range(len(result["runs"]))) + " |")
    print("|---|" + "---|" * len(result["runs"]))
    for key, label, fmt in keys:
        print(f"| {label} | " + " | ".join(fmt.format(r[key]) for r in result["runs"]) + " |")
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = RESULTS / f"bridge-{stamp}.json"
        path.write_text(json.dumps(result, indent=2))
        print(f"\nwritten to {path.name} in benchmarks/results/")


if __name__ == "__main__":
    cli()
