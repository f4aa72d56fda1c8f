"""``cellbox mcp``: sandboxes as tools for any MCP client (the official ``mcp`` SDK).

The server is a client of a cellbox server: every tool goes through our own SDK
(``cellbox.sdk``), so it finds the API key the way the CLI does and works against a
remote server as well as a local one. Over stdio it acts with the key it was started
with; over streamable HTTP with the ``Authorization: Bearer`` key of each request
(``http_gate.py``), so each caller sees only its own project's sandboxes.

Modules: ``limits`` (every bound in one place), ``validate`` (pydantic types for tool
inputs), ``backend`` (key → SDK client, errors → messages for the model), ``exec_tools``
/ ``file_tools`` / ``lifecycle_tools`` (the tools), ``server`` (the MCPServer and the
transports), ``http_gate`` (the bearer-key check in front of HTTP).
"""
