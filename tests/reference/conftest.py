"""Session fixtures: the test guests, built once (and cached across sessions)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reference import guests


@pytest.fixture(scope="session")
def cli_wasm() -> Path:
    return guests.cli_guest()


@pytest.fixture(scope="session")
def job_wasm() -> Path:
    return guests.job_guest()


@pytest.fixture
def host_echo_server() -> Iterator[int]:
    """A host echo server on a real loopback port, one connection at a time."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)  # lets the thread notice `stop`
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(60)
                while data := conn.recv(65536):
                    conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=10)
        listener.close()
