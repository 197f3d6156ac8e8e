"""The API in this process, on a free loopback port: for the demo's tour and the live tests."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1", *, start_timeout_s: float = 60) -> Iterator[str]:
    """Run the app under uvicorn in a thread on a free port of `host`; yields the base URL.

    Raises RuntimeError when the server does not start within start_timeout_s.
    """
    import uvicorn

    sock = socket.socket()
    try:
        sock.bind((host, 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + start_timeout_s
            while not server.started:
                if time.monotonic() > deadline or not thread.is_alive():
                    raise RuntimeError(f"the API server did not start on {host}:{port}")
                time.sleep(0.02)
            yield f"http://{host}:{port}"
        finally:
            server.should_exit = True
            thread.join(15)
    finally:
        sock.close()
