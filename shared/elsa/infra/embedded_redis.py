"""An embedded Redis-protocol server for ``elsa demo`` when no Redis URL is given (DESIGN §6).

It is fakeredis's TCP server (``fakeredis.TcpFakeServer``, in-memory, single process) bound to
loopback and served from a background thread, so the cloud talks to it through the same
``redis.asyncio`` client and :class:`~elsa.infra.live.LiveStore` as to a real Redis. Data lives
only as long as the server.

In-process::

    with EmbeddedRedis() as server:
        store = LiveStore.from_url(server.url)

As a separate process (runs until SIGTERM or SIGINT)::

    python -m elsa.infra.embedded_redis --port 6390
"""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType, TracebackType

from fakeredis import TcpFakeServer

from elsa.errors import ConfigError

_POLL_INTERVAL_S = 0.05


class EmbeddedRedis:
    """A fakeredis TCP server on ``host:port`` (``port=0`` picks a free port) in a daemon thread.

    Use as a context manager, or call :meth:`start` and :meth:`stop` yourself.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Describe the server; nothing is bound until :meth:`start`."""
        if not 0 <= port <= 65535:
            raise ConfigError(f"port must be in 0..65535, got {port}")
        self._host = host
        self._port = port
        self._server: TcpFakeServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> EmbeddedRedis:
        """Bind the port and start serving; returns ``self``. Idempotent."""
        if self._server is None:
            server = TcpFakeServer((self._host, self._port))
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": _POLL_INTERVAL_S},
                name=f"embedded-redis-{server.server_address[1]}",
                daemon=True,
            )
            thread.start()
            self._server, self._thread = server, thread
        return self

    @property
    def port(self) -> int:
        """The bound port (:class:`ConfigError` before :meth:`start`)."""
        if self._server is None:
            raise ConfigError("the embedded Redis server is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``redis://host:port/0`` of the running server."""
        return f"redis://{self._host}:{self.port}/0"

    def stop(self) -> None:
        """Stop serving, close client connections and free the port. Idempotent."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """Serve on ``--host``/``--port`` until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m elsa.infra.embedded_redis", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback)")
    parser.add_argument("--port", type=int, required=True, help="TCP port to listen on")
    args = parser.parse_args(argv)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with EmbeddedRedis(args.host, args.port):
        stop.wait()


if __name__ == "__main__":
    main()
