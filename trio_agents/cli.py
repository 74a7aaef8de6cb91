"""Command line: ``run_app(server)`` for agent files, and ``trio-agents`` itself.

``python agent.py start|dev|connect`` runs a worker; ``trio-agents local-server``
runs the stand-in LiveKit server; ``trio-agents demo`` runs the stand-in, a
worker and simulated participants together.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click
import trio

from ._groups import sole_error
from ._logging import LOG_LEVELS, setup_logging

if TYPE_CHECKING:
    from ._worker._request import JobRequest
    from ._worker._server import AgentServer

logger = logging.getLogger("trio_agents.cli")

_url = click.option("--url", envvar="LIVEKIT_URL", help="LiveKit server URL (env LIVEKIT_URL)")
_key = click.option("--api-key", envvar="LIVEKIT_API_KEY", help="API key (env LIVEKIT_API_KEY)")
_secret = click.option(
    "--api-secret", envvar="LIVEKIT_API_SECRET", help="API secret (env LIVEKIT_API_SECRET)"
)
_level = click.option(
    "--log-level",
    envvar="LIVEKIT_LOG_LEVEL",
    default=None,
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
)


_health_port = click.option(
    "--health-port",
    type=click.IntRange(min=0, max=65535),
    default=None,
    help="port of the health/status server (default 8081 for start, any free port for dev; "
    "0 picks a free one)",
)


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def _run_worker(server: AgentServer, *, reload_dir: Path | None = None) -> None:
    from ._worker._server import WorkerError

    try:
        if reload_dir is None:
            trio.run(functools.partial(server.run, handle_signals=True))
            return
        if not trio.run(_run_until_changed, server, reload_dir):
            return
    except WorkerError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:  # pragma: no cover - signals are handled by run()
        sys.exit(130)
    # a source file changed and every job has ended: start again on the new code
    logger.warning("reloading: %s", " ".join(sys.orig_argv))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


async def _run_until_changed(server: AgentServer, watch_dir: Path) -> bool:
    """Run the worker; when a ``.py`` file under ``watch_dir`` changes, drain it.

    Draining lets running jobs finish (no job is cut by a reload; the log says
    what it waits for).  True if it stopped for a change, False if it stopped
    for any other reason (a signal, ``aclose()``).
    """
    import anyio
    import watchfiles

    stop = anyio.Event()
    changed = False

    async def watch() -> None:
        nonlocal changed
        async for changes in watchfiles.awatch(
            watch_dir, watch_filter=watchfiles.PythonFilter(), stop_event=stop
        ):
            names = sorted({Path(path).name for _, path in changes})
            logger.warning(
                "%s changed: draining before the reload (running jobs end first)",
                ", ".join(names),
            )
            changed = True
            await server.drain()
            return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        try:
            await server.run(handle_signals=True)
        finally:
            stop.set()  # the watcher thread notices within 50 ms
    return changed


def _configure(
    server: AgentServer, url: str | None, api_key: str | None, api_secret: str | None
) -> None:
    if url:
        server.ws_url = url
    if api_key:
        server.api_key = api_key
    if api_secret:
        server.api_secret = api_secret


def _accept_as(server: AgentServer, identity: str) -> None:
    """Make the session accept its jobs as ``identity`` (``connect --participant-identity``)."""
    session = server.session
    if not identity:
        _fail("--participant-identity must not be empty")
    if session.on_request is not None:
        _fail(
            "--participant-identity cannot be combined with the agent's own on_request "
            "handler: pass the identity to req.accept(identity=...) there"
        )

    async def accept(req: JobRequest) -> None:
        await req.accept(identity=identity)

    session.on_request = accept


async def _console(server: AgentServer, room: str, identity: str, topic: str) -> int:
    """``console``: the agent (INLINE executor) and the terminal as a simulated participant."""
    import os

    from livekit.protocol import agent
    from livekit.protocol.agent_dispatch import CreateAgentDispatchRequest

    from . import rtc
    from ._types import JobExecutorType
    from .api import LiveKitAPI
    from .testing import open_local_server

    def show(line: str) -> None:
        click.echo(line)

    async with open_local_server(departure_timeout=0.5) as local:
        server.ws_url, server.api_key, server.api_secret = (
            local.url,
            local.api_key,
            local.api_secret,
        )
        server.job_executor_type = JobExecutorType.INLINE
        server.devmode = True
        server.port = None
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            await server.wait_registered()
            if server.agent_name:  # explicit dispatch; automatic agents come on the join
                async with LiveKitAPI(local.url, local.api_key, local.api_secret) as lk:
                    await lk.agent_dispatch.create_dispatch(
                        CreateAgentDispatchRequest(agent_name=server.agent_name, room=room)
                    )
            async with local.simulated_participant(identity, room=room) as you:

                async def print_texts() -> None:
                    async with you.room.events(rtc.TextReceived) as texts:
                        async for ev in texts:
                            who = ev.participant.identity if ev.participant else "?"
                            show(f"[{who}] {ev.text}")

                nursery.start_soon(print_texts)
                record = await local.wait_for_job(room=room)

                def agent_present() -> bool:
                    return any(
                        p.kind == rtc.ParticipantKind.AGENT
                        for p in you.room.remote_participants.values()
                    )

                # lines typed before the agent joined would reach nobody
                async with you.room.events(rtc.ParticipantConnected) as joins:
                    if not agent_present():
                        async for _ in joins:
                            if agent_present():
                                break
                show(
                    f"(console: you are {identity!r} in {room!r}; type a line to send it, "
                    "Ctrl-D to leave)"
                )
                stdin = trio.lowlevel.FdStream(os.dup(0))
                async with stdin:
                    buffer = b""
                    while True:
                        chunk = await stdin.receive_some(65536)
                        if not chunk:
                            break
                        buffer += chunk
                        *lines, buffer = buffer.split(b"\n")
                        for line in lines:
                            text = line.decode(errors="replace").strip()
                            if text:
                                await you.send_text(text, topic=topic)
                with trio.move_on_after(1.0):  # the last line goes out before we leave
                    await you.room.local_participant.wait_for_outbound()
            final = await local.wait_for_job_status(
                record.job.id, agent.JS_SUCCESS, agent.JS_FAILED
            )
            await server.aclose()
            nursery.cancel_scope.cancel()
    error = f" {final.error}" if final.error else ""
    show(f"(console: the job ended: {agent.JobStatus.Name(final.status)}{error})")
    return 0 if final.status == agent.JS_SUCCESS else 1


def build_app_cli(server: AgentServer) -> click.Group:
    """The click group ``run_app`` runs; exposed for tests."""

    @click.group(help="Run this agent as a trio-agents worker.")
    def app() -> None:
        pass

    @app.command(help="Run the worker for production: drains on SIGTERM.")
    @_url
    @_key
    @_secret
    @_level
    @click.option("--drain-timeout", type=float, default=None, help="seconds to let jobs finish")
    @click.option("--log-format", type=click.Choice(["text", "json"]), default="json")
    @_health_port
    def start(
        url: str | None,
        api_key: str | None,
        api_secret: str | None,
        log_level: str | None,
        drain_timeout: float | None,
        log_format: str,
        health_port: int | None,
    ) -> None:
        setup_logging(log_level or "INFO", json_format=log_format == "json")
        _configure(server, url, api_key, api_secret)
        if health_port is not None:
            server.port = health_port
        if drain_timeout is not None:
            server.drain_timeout = drain_timeout
        _run_worker(server)

    @app.command(help="Run the worker for development: debug logs, no load limit.")
    @_url
    @_key
    @_secret
    @_level
    @_health_port
    @click.option(
        "--reload/--no-reload",
        default=True,
        show_default=True,
        help="restart on a change of a .py file beside the agent (after running jobs end)",
    )
    def dev(
        url: str | None,
        api_key: str | None,
        api_secret: str | None,
        log_level: str | None,
        health_port: int | None,
        reload: bool,
    ) -> None:
        setup_logging(log_level or "DEBUG")
        _configure(server, url, api_key, api_secret)
        server.devmode = True
        if server.num_idle_processes is None:
            server.num_idle_processes = 0
        if health_port is not None:
            server.port = health_port
        elif server.port == 8081:
            server.port = 0
        watch = Path(sys.argv[0]).resolve().parent if reload else None
        _run_worker(server, reload_dir=watch)

    @app.command(help="Run the worker and dispatch it to one room.")
    @_url
    @_key
    @_secret
    @_level
    @click.option("--room", required=True, help="room to join (created if missing)")
    @click.option("--metadata", default="", help="job metadata")
    @click.option(
        "--participant-identity",
        default=None,
        help="the agent's identity in the room (default agent-<job id>)",
    )
    def connect(
        url: str | None,
        api_key: str | None,
        api_secret: str | None,
        log_level: str | None,
        room: str,
        metadata: str,
        participant_identity: str | None,
    ) -> None:
        setup_logging(log_level or "DEBUG")
        _configure(server, url, api_key, api_secret)
        server.devmode = True
        server.port = None
        if participant_identity is not None:
            _accept_as(server, participant_identity)

        async def main() -> None:
            from livekit.protocol.agent_dispatch import CreateAgentDispatchRequest

            from .api import LiveKitAPI

            async with trio.open_nursery() as nursery:
                await nursery.start(functools.partial(server.run, handle_signals=True))
                await server.wait_registered()
                async with LiveKitAPI(server.ws_url, server.api_key, server.api_secret) as lk:
                    await lk.agent_dispatch.create_dispatch(
                        CreateAgentDispatchRequest(
                            agent_name=server.agent_name, room=room, metadata=metadata
                        )
                    )

        from ._worker._server import WorkerError

        try:
            trio.run(main)
        except BaseException as exc:
            # (a plain except: before Python 3.11.4, sys.exit inside except*
            # comes out wrapped in a group)
            error = sole_error(exc)
            if not isinstance(error, WorkerError):
                raise
            _fail(str(error))

    @app.command(
        help="Talk to the agent from this terminal: it runs against an in-process stand-in, "
        "each line you type is sent as text, and the agent's texts are printed."
    )
    @_level
    @click.option("--room", default="console-room", show_default=True)
    @click.option("--identity", default="you", show_default=True, help="your identity")
    @click.option(
        "--topic", default="lk.chat", show_default=True, help="topic of the texts you send"
    )
    def console(log_level: str | None, room: str, identity: str, topic: str) -> None:
        setup_logging(log_level or "WARNING")
        _no_jwt_warning()
        code = trio.run(_console, server, room, identity, topic)
        sys.exit(code)

    @app.command(
        "download-files",
        help="Download model files (kept for livekit-agents Dockerfiles; nothing to do here).",
    )
    def download_files() -> None:
        click.echo(
            "trio-agents: no plugin needs files downloaded; nothing to do "
            "(this command exists so that Dockerfiles written for livekit-agents work)",
            err=True,
        )

    return app


def run_app(server: AgentServer, argv: list[str] | None = None) -> None:
    """Run the command line for ``server`` (``python agent.py start|dev|connect``)."""
    from ._executor import _zygote
    from ._worker._server import AgentServer

    if _zygote.LOADING:
        return  # a job process is importing the agent file: no command line there
    if not isinstance(server, AgentServer):
        raise TypeError(f"run_app takes an AgentServer, not {type(server).__name__}")
    server.session  # noqa: B018 - fail early without an entrypoint
    build_app_cli(server).main(args=argv, prog_name=sys.argv[0], standalone_mode=True)


# --- the trio-agents command -----------------------------------------------------------


@click.group(help="trio-agents: LiveKit agents on trio.")
def main() -> None:
    pass


@main.command(
    "local-server", help="Run the stand-in LiveKit server (livekit-server --dev defaults)."
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=7880, show_default=True, type=int)
@click.option("--api-key", default="devkey", show_default=True)
@click.option("--api-secret", default="secret", show_default=True)
@click.option("--departure-timeout", default=20.0, show_default=True, type=float)
@_level
def local_server(
    host: str,
    port: int,
    api_key: str,
    api_secret: str,
    departure_timeout: float,
    log_level: str | None,
) -> None:
    from .testing import open_local_server

    setup_logging(log_level or "INFO")

    async def serve() -> None:
        async with open_local_server(
            host=host,
            port=port,
            api_key=api_key,
            api_secret=api_secret,
            departure_timeout=departure_timeout,
        ) as server:
            click.echo(f"stand-in LiveKit server at {server.url} (key {api_key!r})", err=True)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    click.echo(f"{signal.Signals(signum).name}: stopping", err=True)
                    return

    try:
        trio.run(serve)
    except BaseException as exc:
        error = sole_error(exc)
        if not isinstance(error, OSError):
            raise
        _fail(f"cannot listen on {host}:{port}: {error}")


_server_url = click.option(
    "--url",
    envvar="LIVEKIT_URL",
    default="ws://127.0.0.1:7880",
    show_default=True,
    help="the server (env LIVEKIT_URL)",
)
_server_key = click.option(
    "--api-key", envvar="LIVEKIT_API_KEY", default="devkey", show_default=True
)
_server_secret = click.option(
    "--api-secret", envvar="LIVEKIT_API_SECRET", default="secret", show_default=True
)


def _key_values(pairs: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint=what)
        out[key] = value
    return out


@main.command(help="Dispatch an agent to a room (AgentDispatchService.CreateDispatch).")
@_server_url
@_server_key
@_server_secret
@click.option("--room", required=True, help="the room (created if missing)")
@click.option("--agent-name", required=True, help="the agent's registered name")
@click.option("--metadata", default="", help="the job's metadata (often JSON)")
def dispatch(
    url: str, api_key: str, api_secret: str, room: str, agent_name: str, metadata: str
) -> None:
    from livekit.protocol.agent_dispatch import CreateAgentDispatchRequest

    from .api import APIConnectionError, LiveKitAPI, TwirpError

    async def go() -> str:
        async with LiveKitAPI(url, api_key, api_secret) as lk:
            created = await lk.agent_dispatch.create_dispatch(
                CreateAgentDispatchRequest(agent_name=agent_name, room=room, metadata=metadata)
            )
        return str(created.id)

    _no_jwt_warning()
    try:
        dispatch_id = trio.run(go)
    except (APIConnectionError, TwirpError) as exc:
        _fail(f"dispatch failed: {exc}")
    click.echo(dispatch_id)


def _no_jwt_warning() -> None:
    # (the command line's own tokens: any short key, as setup_logging does for workers)
    import warnings

    warnings.filterwarnings("ignore", message="The HMAC key is .* below the minimum")


@main.group(
    help="Simulated participants in a stand-in room, driven from another terminal "
    "(trio-agents local-server hosts them)."
)
def sim() -> None:
    pass


def _sim_call(
    url: str, api_key: str, api_secret: str, command: str, body: Mapping[str, object]
) -> dict[str, object]:
    import httpx
    from livekit import api as lkapi

    from ._transport import http_base_url

    _no_jwt_warning()
    room = str(body["room"])
    token = (
        lkapi.AccessToken(api_key, api_secret)
        .with_grants(lkapi.VideoGrants(room_admin=True, room=room))
        .to_jwt()
    )
    base = http_base_url(url)
    try:
        resp = httpx.post(
            f"{base}/sim/{command}",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=120,
        )
    except httpx.HTTPError as exc:
        _fail(f"cannot reach the stand-in at {url}: {exc}")
        raise  # (unreachable: _fail exits)
    try:
        answer = resp.json()
    except ValueError:
        answer = {"error": resp.text.strip() or f"HTTP {resp.status_code}"}
    if resp.status_code != 200:
        from ._tokens import redact_tokens

        _fail(redact_tokens(f"sim {command}: {answer.get('error', answer)}"))
    return dict(answer)


_F = TypeVar("_F", bound=Callable[..., None])


def _sim_command(name: str, help: str) -> Callable[[_F], click.Command]:
    """Decorator: a ``sim`` subcommand with the server and participant options."""

    def decorate(fn: _F) -> click.Command:
        for option in reversed(
            (
                _server_url,
                _server_key,
                _server_secret,
                click.option("--room", required=True),
                click.option("--identity", required=True, help="the participant's identity"),
            )
        ):
            fn = option(fn)
        return sim.command(name, help=help)(fn)

    return decorate


@_sim_command("join", "Join a room as a simulated participant (it stays until 'leave').")
@click.option(
    "--kind",
    type=click.Choice(["standard", "sip", "connector", "ingress"]),
    default="standard",
    show_default=True,
)
@click.option("--name", default="")
@click.option("--metadata", default="")
@click.option("--attribute", "attributes", multiple=True, help="KEY=VALUE (repeatable)")
def sim_join(
    url: str,
    api_key: str,
    api_secret: str,
    room: str,
    identity: str,
    kind: str,
    name: str,
    metadata: str,
    attributes: tuple[str, ...],
) -> None:
    body = {
        "room": room,
        "identity": identity,
        "kind": kind,
        "name": name,
        "metadata": metadata,
        "attributes": _key_values(attributes, "--attribute"),
    }
    _sim_call(url, api_key, api_secret, "join", body)
    click.echo(f"{identity} joined {room}", err=True)


@_sim_command("say", "Send text to the room (a text stream on TOPIC).")
@click.option("--topic", default="lk.chat", show_default=True)
@click.argument("text")
def sim_say(
    url: str, api_key: str, api_secret: str, room: str, identity: str, topic: str, text: str
) -> None:
    body = {"room": room, "identity": identity, "text": text, "topic": topic}
    _sim_call(url, api_key, api_secret, "say", body)


@_sim_command("attrs", "Set attributes (KEY=VALUE ...; an empty VALUE removes the key).")
@click.argument("pairs", nargs=-1, required=True)
def sim_attrs(
    url: str, api_key: str, api_secret: str, room: str, identity: str, pairs: tuple[str, ...]
) -> None:
    body = {"room": room, "identity": identity, "attributes": _key_values(pairs, "PAIRS")}
    _sim_call(url, api_key, api_secret, "attrs", body)


@_sim_command("publish-audio", "Publish a sine tone (returns once it was sent).")
@click.option("--seconds", type=click.FloatRange(min=0), default=1.0, show_default=True)
@click.option("--frequency", type=click.FloatRange(min=0), default=440.0, show_default=True)
def sim_publish_audio(
    url: str,
    api_key: str,
    api_secret: str,
    room: str,
    identity: str,
    seconds: float,
    frequency: float,
) -> None:
    body = {"room": room, "identity": identity, "seconds": seconds, "frequency": frequency}
    _sim_call(url, api_key, api_secret, "publish-audio", body)


@_sim_command("texts", "Print the texts the participant received so far (JSON lines).")
def sim_texts(url: str, api_key: str, api_secret: str, room: str, identity: str) -> None:
    answer = _sim_call(url, api_key, api_secret, "texts", {"room": room, "identity": identity})
    texts = answer.get("texts", [])
    assert isinstance(texts, list)
    for text in texts:
        click.echo(json.dumps(text))


@_sim_command("leave", "Leave the room.")
def sim_leave(url: str, api_key: str, api_secret: str, room: str, identity: str) -> None:
    _sim_call(url, api_key, api_secret, "leave", {"room": room, "identity": identity})
    click.echo(f"{identity} left {room}", err=True)


@main.command(help="Run the demo: stand-in server, a worker and simulated participants.")
@click.option("--participants", default=2, show_default=True, type=click.IntRange(min=0))
@click.option("--executor", type=click.Choice(["process", "thread", "inline"]), default="process")
@click.option(
    "--timeline-svg",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="also write the job's timeline as an SVG picture to this file",
)
@_level
def demo(participants: int, executor: str, timeline_svg: str | None, log_level: str | None) -> None:
    from ._demo import run_demo, show_timeline

    setup_logging(log_level or "INFO")
    code = trio.run(run_demo, participants, executor)
    show_timeline(participants, timeline_svg)
    sys.exit(code)

