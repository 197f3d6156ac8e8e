"""The API in this process (serving.threaded.serve_in_thread)."""

from __future__ import annotations

import socket

import httpx
import pytest
from fastapi import FastAPI

from serving.threaded import serve_in_thread


def test_the_app_answers_and_its_port_is_freed_afterwards() -> None:
    app = FastAPI()

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"pong": "yes"}

    with serve_in_thread(app) as base:
        assert httpx.get(f"{base}/ping", timeout=10).json() == {"pong": "yes"}
        port = int(base.rsplit(":", 1)[1])
    with socket.socket() as probe:  # closed: the port can be bound again
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))


def test_a_server_that_cannot_start_is_an_error() -> None:
    async def broken(scope, receive, send):  # an ASGI app whose start-up fails
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.failed", "message": "no"})

    with pytest.raises(RuntimeError, match="the API server did not start on 127.0.0.1:"):
        with serve_in_thread(broken, start_timeout_s=10):
            pass
