"""``PUT /_cellbox/v1/env``: variables added to the environment of every later process.

The server calls it once, right after a create, with the project's secrets the create
named (``secret_names``); from then on every process, PTY and managed process the
agent starts inherits them, because children are built from the agent's own
environment (``users.build_env``). Kept in the agent's memory only, never on disk:
a memory snapshot of the sandbox therefore holds them (as it holds any process's
environment), a filesystem snapshot does not.
"""

from __future__ import annotations

import os
import re

from .errors import APIError
from .routes import Router
from .server import Request, Response, json_response

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
PRIVATE_PREFIX = "CELLBOX_"  # the agent's own settings: never set from outside


class EnvAPI:
    def register(self, router: Router) -> None:
        router.add("PUT", "/_cellbox/v1/env", self.put)

    async def put(self, request: Request) -> Response:
        body = await request.json()
        env = body.get("env") if isinstance(body, dict) else None
        if not isinstance(env, dict):
            raise APIError(400, "INVALID_REQUEST", "body: expected {\"env\": {NAME: value}}")
        for name, value in env.items():
            if not isinstance(value, str) or not _NAME.match(str(name)) or str(name).startswith(PRIVATE_PREFIX):
                raise APIError(400, "INVALID_REQUEST", f"env: {name!r} is not a name that may be set")
            if "\0" in value:
                raise APIError(400, "INVALID_REQUEST", f"env: {name!r} contains a NUL byte")
        os.environ.update(env)
        return json_response({"names": sorted(env)})  # never the values
