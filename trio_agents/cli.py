"""Command line: ``run_app(server)`` for agent files, and ``trio-agents`` itself.

``python agent.py start|dev|connect`` runs a worker; ``trio-agents local-server``
runs the stand-in LiveKit server; ``trio-agents demo`` runs the stand-in, a
worker and simulated participants together.
"""

from __future__ import annotations

import functools
import logging
import signal
import sys
from typing import TYPE_CHECKING, Any

import click
import trio

from ._groups import sole_error
from ._logging import setup_logging

if TYPE_CHECKING:
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
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def _run_worker(server: AgentServer) -> None:
    from ._worker._server import WorkerError

    try:
        trio.run(functools.partial(server.run, handle_signals=True))
    except WorkerError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:  # pragma: no cover - signals are handled by run()
        sys.exit(130)


def _configure(
    server: AgentServer, url: str | None, api_key: str | None, api_secret: str | None
) -> None:
    if url:
        server.ws_url = url
    if api_key:
        server.api_key = api_key
    if api_secret:
        server.api_secret = api_secret


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
    def start(
        url: str | None,
        api_key: str | None,
        api_secret: str | None,
        log_level: str | None,
        drain_timeout: float | None,
        log_format: str,
    ) -> None:
        setup_logging(log_level or "INFO", json_format=log_format == "json")
        _configure(server, url, api_key, api_secret)
        if drain_timeout is not None:
            server.drain_timeout = drain_timeout
        _run_worker(server)

    @app.command(help="Run the worker for development: debug logs, no load limit.")
    @_url
    @_key
    @_secret
    @_level
    def dev(
        url: str | None, api_key: str | None, api_secret: str | None, log_level: str | None
    ) -> None:
        setup_logging(log_level or "DEBUG")
        _configure(server, url, api_key, api_secret)
        server.devmode = True
        if server.num_idle_processes is None:
            server.num_idle_processes = 0
        if server.port == 8081:
            server.port = 0
        _run_worker(server)

    @app.command(help="Run the worker and dispatch it to one room.")
    @_url
    @_key
    @_secret
    @_level
    @click.option("--room", required=True, help="room to join (created if missing)")
    @click.option("--metadata", default="", help="job metadata")
    def connect(
        url: str | None,
        api_key: str | None,
        api_secret: str | None,
        log_level: str | None,
        room: str,
        metadata: str,
    ) -> None:
        setup_logging(log_level or "DEBUG")
        _configure(server, url, api_key, api_secret)
        server.devmode = True
        server.port = None

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


@main.command(help="Run the demo: stand-in server, a worker and simulated participants.")
@click.option("--participants", default=2, show_default=True, type=int)
@click.option("--executor", type=click.Choice(["process", "thread", "inline"]), default="process")
@_level
def demo(participants: int, executor: str, log_level: str | None) -> None:
    from ._demo import run_demo

    setup_logging(log_level or "INFO")
    code = trio.run(run_demo, participants, executor)
    sys.exit(code)


def _entry(*args: Any) -> None:  # pragma: no cover
    main()
