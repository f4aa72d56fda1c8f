"""uvicorn's h11 protocol, with 431 for an oversized request head and JSON error bodies.

uvicorn answers every unparsable request with a plain-text 400, including a head over
h11's size limit, which h11 itself marks as 431 (``error_status_hint``). A client
flooding headers should learn that it is the size (431, as the proxy answers); any
other malformed request stays a 400. Both bodies take the API's error shape.
"""

from __future__ import annotations

import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

MAX_HEAD = 64 * 1024  # request line + headers: as the proxy (proxy/client.py)


class H11Protocol431(H11Protocol):
    def send_400_response(self, msg: str) -> None:
        # h11 keeps the unparsed bytes: more than the limit means the head was too big.
        too_big = len(self.conn.trailing_data[0]) > MAX_HEAD
        status, code, message = (
            (431, "HEADER_TOO_LARGE", f"request line and headers are larger than {MAX_HEAD} bytes")
            if too_big else (400, "INVALID_REQUEST", msg)
        )
        body = json.dumps({"error": message, "code": code}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        reason = b"Request Header Fields Too Large" if too_big else b"Bad Request"
        for event in (h11.Response(status_code=status, headers=headers, reason=reason), h11.Data(data=body),
                      h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()
