"""Route table: hand-rolled matching of ``METHOD /path/{param}`` patterns.

A linear scan over a dozen segment patterns costs microseconds and, unlike a
framework router, nothing at import time.  Path parameters are matched on the
raw (still percent-encoded) segments and decoded afterwards, so an encoded
``%2F`` inside a process name can never split a segment.  Unknown paths are
404 ``NOT_FOUND``; a known path with the wrong method is 405 with ``Allow``.
"""

from __future__ import annotations

from typing import Any, Callable

from .errors import APIError
from .server import AnyResponse, Handler, Request, error_response, percent_decode


class Router:
    def __init__(self) -> None:
        self._routes: list[tuple[str, tuple[str, ...], Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        segments = tuple(pattern.strip("/").split("/"))
        self._routes.append((method.upper(), segments, handler))

    def _match(self, segments: list[str], pattern: tuple[str, ...]) -> dict[str, str] | None:
        if len(segments) != len(pattern):
            return None
        params: dict[str, str] = {}
        for seg, pat in zip(segments, pattern, strict=True):
            if pat.startswith("{") and pat.endswith("}"):
                if not seg:
                    return None
                params[pat[1:-1]] = percent_decode(seg)
            elif seg != pat:
                return None
        return params

    async def dispatch(self, request: Request) -> AnyResponse:
        segments = request.path.strip("/").split("/")
        allowed: list[str] = []
        for method, pattern, handler in self._routes:
            params = self._match(segments, pattern)
            if params is None:
                continue
            if method != request.method:
                allowed.append(method)
                continue
            request.params = params
            return await handler(request)
        if allowed:
            response = error_response(
                APIError(405, "METHOD_NOT_ALLOWED", f"method {request.method} not allowed on {request.path}")
            )
            response.headers.append(("Allow", ", ".join(sorted(set(allowed)))))
            return response
        raise APIError(404, "NOT_FOUND", f"no route for {request.method} {request.path}")


class Lazy:
    """An API object built on its first request, so its modules stay off start-up.

    ``build`` imports what it needs (PTY, tunnels: termios/wsproto...) and
    returns the object whose coroutine methods serve the routes.
    """

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self.obj: Any = None

    def get(self) -> Any:
        if self.obj is None:
            self.obj = self._build()
        return self.obj

    def handler(self, name: str) -> Handler:
        async def call(request: Request) -> AnyResponse:
            return await getattr(self.get(), name)(request)  # type: ignore[no-any-return]

        return call
