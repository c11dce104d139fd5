"""Serving the app: uvicorn, on uvloop with the httptools parser (the faster pair, measured in
docs/benchmarks.md), in one or several worker processes sharing one listening socket.

The socket is made here rather than by uvicorn, as a TCP socket by protocol number, so that the
event loop sets TCP_NODELAY on every connection it accepts. Without it (uvicorn's own socket
for several workers, on the standard asyncio loop), an answer written in two pieces waits for
the client's delayed acknowledgement: about 40 ms on every request of a kept-alive connection.

Each connection is read under the limits in clearinghouse.http_limits (timeouts for the request's
head and body, the head's size, connections per process).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from uvicorn.supervisors import Multiprocess

from clearinghouse import logs
from clearinghouse.config import get_settings
from clearinghouse.http_limits import PROTOCOLS, ConnectionLimits, ServerConfig

APP = "clearinghouse.app:create_app"
# prometheus_client's own setting, read when it is first imported: named here, not imported.
METRICS_DIRECTORY = "PROMETHEUS_MULTIPROC_DIR"


def listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


@contextlib.contextmanager
def metrics_directory() -> Iterator[None]:
    """Where the workers write their metrics for any one of them to expose
    (clearinghouse.api.metrics): PROMETHEUS_MULTIPROC_DIR if set, emptied of a previous
    server's, else a temporary directory removed when the server stops."""
    given = os.environ.get(METRICS_DIRECTORY)
    if given:
        shutil.rmtree(given, ignore_errors=True)
        Path(given).mkdir(parents=True)
        yield
        return
    with tempfile.TemporaryDirectory(prefix="clearinghouse-metrics-") as directory:
        os.environ[METRICS_DIRECTORY] = directory
        try:
            yield
        finally:
            del os.environ[METRICS_DIRECTORY]


def serve(
    *,
    host: str,
    port: int,
    workers: int,
    jobs: bool = True,
    loop: str = "uvloop",
    http: str = "httptools",
    forwarded_allow_ips: str | None = None,
    ssl_certfile: Path | None = None,
    ssl_keyfile: Path | None = None,
    limits: ConnectionLimits,
) -> None:
    """Serve until stopped. The workers build the app themselves (each its own pool and
    caches); with `jobs`, they take turns at the periodic jobs, one at a time."""
    os.environ["CLEARINGHOUSE_JOBS"] = "true" if jobs else "false"
    # The command read the settings before: the workers, and a single worker in this process,
    # must see this one.
    get_settings.cache_clear()
    config = ServerConfig(
        APP,
        limits,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop=loop,
        http=PROTOCOLS[http],
        # h11 refuses a head beyond this itself (400), before the limit's 431 could.
        h11_max_incomplete_event_size=limits.max_head_bytes,
        # Forwarded headers are believed only from the proxy named, never from anyone.
        proxy_headers=forwarded_allow_ips is not None,
        forwarded_allow_ips=forwarded_allow_ips,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        # Every worker writes its records (uvicorn's too) as the command line does, and the
        # app's access log (clearinghouse.api.request_ids) stands in for uvicorn's.
        log_config=logs.server_config(),
        access_log=False,
        # A worker that has not answered the supervisor's ping in this long is replaced. Starting
        # one (the interpreter, the app, its pool) takes seconds on a busy machine: at uvicorn's
        # 5 s, workers were replaced before they had started, again and again.
        timeout_worker_healthcheck=30,
    )
    sock = listening_socket(host, port)
    with metrics_directory():
        if workers > 1:
            Multiprocess(config, sockets=[sock]).run()
        else:
            uvicorn.Server(config).run(sockets=[sock])
