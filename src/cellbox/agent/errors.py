"""The one exception type handlers raise to produce an HTTP error.

Kept in its own module so that ``files``/``processes`` can signal API errors
without depending on the HTTP layer.  The wire shape is the daemon's
``{"error": str, "code": str}`` (spec section 3).
"""

from __future__ import annotations


class APIError(Exception):
    """An error that maps 1:1 onto an HTTP error response."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, str]:
        return {"error": self.message, "code": self.code}


def bad_request(message: str, code: str = "INVALID_REQUEST") -> APIError:
    return APIError(400, code, message)
