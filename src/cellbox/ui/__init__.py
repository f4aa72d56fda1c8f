"""The web console at ``/ui``: server-rendered pages (Jinja2 + htmx), live feeds (SSE),
terminals (xterm.js over a PTY relay). See ``app.py``."""

from .app import create_ui

__all__ = ["create_ui"]
