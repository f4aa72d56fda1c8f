"""Reading small form bodies, bounded.

Hand-written on purpose: Starlette's ``request.form()`` needs python-multipart even for
``application/x-www-form-urlencoded``, and the console's forms are a few short fields;
``urllib.parse`` reads them. Files are uploaded as raw bodies (``files.py``), never as
multipart.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request

from ..errors import InvalidRequest

MAX_FORM = 64 << 10


async def read_form(request: Request) -> dict[str, list[str]]:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            raise InvalidRequest(f"form: more than {MAX_FORM} bytes")
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False, max_num_fields=1000)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest(f"form: not a URL-encoded form ({exc})") from None
    out: dict[str, list[str]] = {}
    for key, value in pairs:
        out.setdefault(key, []).append(value)
    return out


def one(form: dict[str, list[str]], name: str, default: str = "") -> str:
    values = form.get(name)
    return values[-1].strip() if values else default


def many(form: dict[str, list[str]], name: str) -> list[str]:
    """A repeated field, or one field of comma/space/newline separated items."""
    items: list[str] = []
    for value in form.get(name, []):
        items += [v for v in value.replace(",", " ").split() if v]
    return items
