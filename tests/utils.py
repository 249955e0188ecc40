"""Helpers shared by the tests: real servers on loopback, started and stopped in-process."""

from __future__ import annotations

import socket

from daemon.servers import serve

__all__ = ["free_port", "serve"]


def free_port() -> int:
    """A loopback port with nothing listening (for "connection refused" cases)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
