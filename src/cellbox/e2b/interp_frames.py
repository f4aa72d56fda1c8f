"""What the in-sandbox kernel sends back, checked: it is the tenant's program.

The kernel's client (``interp_kernel.py``) writes one frame per line, ``=JSON``, or a
long frame as ``+piece`` lines ending in ``=last`` (the agent keeps a line whole only
up to 64 KiB). Here every line is reassembled within ``MAX_FRAME``, parsed, and
rebuilt from the fields e2b-code-interpreter reads, each of its type; anything else
is ``BadFrame`` with a message saying what was wrong, never a host exception.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

MAX_FRAME = 16 << 20  # one result (a PNG is base64 text) or one output chunk
CONTEXT_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_TEXT_KINDS = ("text", "html", "markdown", "svg", "png", "jpeg", "pdf", "latex", "javascript")
_DICT_KINDS = ("json", "data", "extra")


class BadFrame(Exception):
    """The kernel broke the protocol: the message is for the E2B client."""


class Frames:
    """Lines in, checked frames out (``feed`` returns None while a frame is in pieces)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0

    def feed(self, line: str) -> dict[str, Any] | None:
        if not line or line[0] not in "=+":
            raise BadFrame(f"the sandbox's kernel sent a line that is not a frame: {line[:80]!r}")
        self.size += len(line) - 1
        if self.size > MAX_FRAME:
            raise BadFrame(f"the sandbox's kernel sent a frame over {MAX_FRAME} bytes")
        self.parts.append(line[1:])
        if line[0] == "+":
            return None
        raw = "".join(self.parts)
        self.parts, self.size = [], 0
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise BadFrame(f"the sandbox's kernel sent malformed JSON: {exc}") from None
        return check(doc)


def _str(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise BadFrame(f"the sandbox's kernel sent a {doc.get('type')!r} frame without a string {key!r}")
    return value


def _result(doc: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "result", "is_main_result": doc.get("is_main_result") is True}
    for key in _TEXT_KINDS:
        if isinstance(doc.get(key), str):
            out[key] = doc[key]
    for key in _DICT_KINDS:
        if isinstance(doc.get(key), dict):
            out[key] = doc[key]
    return out


def check(doc: Any) -> dict[str, Any]:
    """A frame rebuilt from its known fields (all of their right types)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("type"), str):
        raise BadFrame("the sandbox's kernel sent a frame that is not an object with a 'type'")
    kind = doc["type"]
    if kind in ("stdout", "stderr"):
        stamp = doc.get("timestamp")
        ok = isinstance(stamp, int) and not isinstance(stamp, bool) and stamp >= 0
        return {"type": kind, "text": _str(doc, "text"), "timestamp": stamp if ok else time.time_ns()}
    if kind == "result":
        return _result(doc)
    if kind == "error":
        return {"type": "error", "name": _str(doc, "name"), "value": _str(doc, "value"),
                "traceback": _str(doc, "traceback")}
    if kind == "number_of_executions":
        count = doc.get("execution_count")
        if not isinstance(count, int) or isinstance(count, bool):
            raise BadFrame("the sandbox's kernel sent an execution count that is not an integer")
        return {"type": kind, "execution_count": count}
    if kind in ("cbx_accepted", "cbx_done", "cbx_ok"):
        return {"type": kind}
    if kind == "cbx_error":
        return {"type": kind, "code": _str(doc, "code")[:64], "value": _str(doc, "value")[:2000]}
    if kind == "cbx_context":
        ctx = _str(doc, "id")
        if not CONTEXT_ID.fullmatch(ctx):
            raise BadFrame("the sandbox's kernel sent a context with a malformed id")
        return {"type": kind, "id": ctx, "language": _str(doc, "language")[:32], "cwd": _str(doc, "cwd")[:4096]}
    raise BadFrame(f"the sandbox's kernel sent an unknown frame type {kind[:40]!r}")


def kernel_error(message: str) -> dict[str, Any]:
    """An execution error naming a broken kernel, for the client's ``execution.error``."""
    return {"type": "error", "name": "CellboxKernelError", "value": message, "traceback": ""}
