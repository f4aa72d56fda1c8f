"""cellbox in-sandbox agent (runs as PID 1 inside every sandbox container).

It serves the Tensorlake sandbox-daemon HTTP API (processes, output streaming,
files) on port 9501 so the ``tensorlake`` SDK can drive a cellbox sandbox through
the proxy.  See ``main.py`` for the start-up path and ``server.py`` for why the
HTTP layer is hand-routed over h11.

This package is copied *alone* into each sandbox (together with h11/wsproto,
see ``bundle.py``), so every module here may import only the standard library,
h11, wsproto and sibling modules -- never another ``cellbox`` package.  This
``__init__`` must stay import-light: it is on the start-up hot path.
"""

__version__ = "0.1.0"
