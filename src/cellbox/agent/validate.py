"""Strict, tiny JSON field validators (400 ``INVALID_REQUEST`` on bad input).

Hand-written instead of pydantic & co.: no import cost, and the error text
names the offending field.  ``null`` is treated like an absent field.
"""

from __future__ import annotations

from typing import Any

from .errors import bad_request


def require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object")
    return body


def req_str(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise bad_request(f"field '{key}' is required and must be a non-empty string")
    _no_nul(key, value)
    return value


def opt_str(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request(f"field '{key}' must be a string")
    _no_nul(key, value)
    return value


def opt_str_list(obj: dict[str, Any], key: str) -> list[str]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_request(f"field '{key}' must be an array of strings")
    for v in value:
        _no_nul(key, v)
    return value


def opt_str_map(obj: dict[str, Any], key: str) -> dict[str, str]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise bad_request(f"field '{key}' must be an object of string values")
    for k, v in value.items():
        if not k or "=" in k or "\x00" in k or "\x00" in v:
            raise bad_request(f"invalid environment variable {k!r}")
    return value


def opt_number(obj: dict[str, Any], key: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != value:
        raise bad_request(f"field '{key}' must be a non-negative number")
    return float(value)


def req_int(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"field '{key}' is required and must be an integer")
    return value


def opt_choice(obj: dict[str, Any], key: str, choices: tuple[str, ...], default: str) -> str:
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, str) or value not in choices:
        raise bad_request(f"field '{key}' must be one of {', '.join(choices)}")
    return value


def opt_object(obj: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, dict):
        raise bad_request(f"field '{key}' must be an object")
    return value


def _no_nul(key: str, value: str) -> None:
    if "\x00" in value:
        raise bad_request(f"field '{key}' must not contain NUL bytes")
