"""Static files: our own scripts and styles, and the npm packages' built files.

The vendor files are served from ``npm/node_modules`` (installed by setup with
``npm ci`` from the committed lock file), by a fixed table: only these files are
reachable, so no path from the URL ever touches the filesystem.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from ..errors import NotFound

HERE = Path(__file__).parent
NODE = HERE / "npm" / "node_modules"
FILES: dict[str, Path] = {
    "app.js": HERE / "static" / "app.js",
    "terminal.js": HERE / "static" / "terminal.js",
    "charts.js": HERE / "static" / "charts.js",
    "style.css": HERE / "static" / "style.css",
    "vendor/htmx.min.js": NODE / "htmx.org" / "dist" / "htmx.min.js",
    "vendor/xterm.js": NODE / "@xterm" / "xterm" / "lib" / "xterm.js",
    "vendor/xterm.css": NODE / "@xterm" / "xterm" / "css" / "xterm.css",
    "vendor/addon-fit.js": NODE / "@xterm" / "addon-fit" / "lib" / "addon-fit.js",
    "vendor/uPlot.iife.min.js": NODE / "uplot" / "dist" / "uPlot.iife.min.js",
    "vendor/uPlot.min.css": NODE / "uplot" / "dist" / "uPlot.min.css",
}
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


async def serve(request: Request) -> Response:
    path = FILES.get(request.path_params["name"])
    if path is None or not path.is_file():
        raise NotFound(f"no static file {request.path_params['name']!r} (vendor files: run scripts/setup.sh)")
    return FileResponse(path, media_type=TYPES.get(path.suffix), headers={"Cache-Control": "max-age=3600"})


ROUTES = [Route("/ui/static/{name:path}", serve, methods=["GET"])]
