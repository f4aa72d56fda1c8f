"""Blocking flavour of ``_backend_async.py``: the same names, with sockets and threads."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

Lock = threading.Lock


def sleep(seconds: float) -> None:
    time.sleep(seconds)


def spawn(fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn(*args)`` in a daemon thread."""
    threading.Thread(target=fn, args=args, daemon=True, name=f"cellbox-{getattr(fn, '__name__', 'task')}").start()


def run_both(first: Callable[[], Any], second: Callable[[], Any]) -> None:
    """Run two loops concurrently (``first`` in a thread) and return when both have finished."""

    def guarded() -> None:
        try:
            first()
        except Exception:  # noqa: BLE001 - mirrors asyncio.gather(return_exceptions=True)
            pass

    thread = threading.Thread(target=guarded, daemon=True, name="cellbox-pump")
    thread.start()
    try:
        second()
    except Exception:  # noqa: BLE001
        pass
    thread.join()


class Stream:
    """A TCP (or TLS) connection: ``read`` returns b"" at EOF (or once closed)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._closed = False

    def read(self, max_bytes: int = 65536, timeout: float | None = None) -> bytes:
        if self._closed:
            return b""
        self._sock.settimeout(timeout)
        try:
            return self._sock.recv(max_bytes)
        except TimeoutError:
            raise TimeoutError("read timed out") from None
        except OSError:
            if self._closed:
                return b""
            raise

    def write(self, data: bytes) -> None:
        self._sock.sendall(data)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv()
        except OSError:
            pass
        self._sock.close()


def connect_tcp(host: str, port: int, *, tls: bool = False, timeout: float = 30.0) -> Stream:
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls:
        sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
    sock.settimeout(None)
    return Stream(sock)


class Listener:
    """A local TCP listener; ``accept`` returns None once it is closed."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._closed = False
        self.host, self.port = sock.getsockname()[:2]

    def accept(self) -> Stream | None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                if self._closed:
                    return None
                raise
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return Stream(conn)
        return None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        except OSError:
            pass
        self._sock.close()


def listen(host: str, port: int) -> Listener:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    # Accepted connections inherit it on Linux: a tunnel's small writes go at once.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return Listener(sock)
