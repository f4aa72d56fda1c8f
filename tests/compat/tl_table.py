"""Writes ``docs/compat-tensorlake.md`` (tensorlake SDK call -> status -> tests) from a run
of ``tests/compat/test_tensorlake_*.py`` (``make compat-tensorlake``).

The rows are **enumerated from the installed SDK** (every public method of its client,
sandbox, PTY, tunnel, desktop, image and filesystem classes, sync and async, and the
public functions of ``tensorlake.sandbox`` / ``tensorlake.image``), so a method a new
SDK release adds shows up as "not covered" instead of vanishing. The statuses are
**observed, not declared**: while ``TENSORLAKE_COMPAT_TABLE`` is set, each of those
methods is wrapped by a transparent recorder (arguments, results and exceptions pass
through untouched) that notes which test called it and whether the call returned or
raised. A method is

* **served** when a passing test called it and it returned;
* **refused (`Error`)** when every call raised, in tests that passed (the test
  expected that refusal: ``pytest.raises``);
* **FAILING** when a test that called it failed;
* **not covered** when no test called it (``NOTES`` says why, where we know).
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import inspect
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import pytest

ENV = "TENSORLAKE_COMPAT_TABLE"
CLASSES = {
    "tensorlake.sandbox": ["Sandbox", "AsyncSandbox", "SandboxClient", "AsyncSandboxClient", "Pty", "AsyncPty",
                           "TcpTunnel", "AsyncTcpTunnel", "Desktop"],
    "tensorlake.image": ["Image", "ImageBuildHandle"],
    "tensorlake.filesystem": ["FilesystemClient", "Filesystem", "Mount"],
}
FUNCTIONS = {
    "tensorlake.sandbox": ["create_file_system", "list_file_systems", "delete_file_system"],
    "tensorlake.image": ["start_build", "start_import", "get_build", "wait_build", "cancel_build",
                         "find_sandbox_image_by_name", "list_sandbox_images", "delete_sandbox_image",
                         "import_sandbox_image"],
}
# Why a row is not covered, where that is a known gap rather than a missing test.
NOTES = {
    "Desktop": "no desktop (VNC) image or desktop daemon in cellbox",
    "FilesystemClient": "Tensorlake's Artifact Storage (see docs/from-tensorlake.md)",
    "Filesystem": "Tensorlake's Artifact Storage (see docs/from-tensorlake.md)",
    "Mount": "needs Tensorlake's `tl` CLI FUSE daemon",
    "for_cloud": "Tensorlake's cloud endpoints; use for_localhost / TENSORLAKE_API_URL",
}

_current: list[str] = [""]  # the running test's name
# method -> test -> outcomes seen ("ok" or the exception's class name)
_calls: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
_tests: dict[str, str] = {}  # test -> passed | failed | skipped
_rows: list[str] = []


def enabled() -> bool:
    return bool(os.environ.get(ENV))


def _refusal(exc: BaseException) -> str:
    """The exception's class, with the server's wire code and status when it carries them."""
    try:
        text = str(exc)
    except Exception:  # the recorder never changes what the call raised
        text = ""
    parts = [type(exc).__name__]
    for pattern in (r"\b([45]\d\d)\b", r'"code"\s*:\s*"([A-Za-z_]+)"'):
        found = re.search(pattern, text)
        if found is not None:
            parts.append(found.group(1))
    return " ".join(parts)


def _recorder(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def note(outcome: str) -> None:
        if _current[0]:
            _calls[name][_current[0]].add(outcome)

    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def awrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                note(_refusal(exc))
                raise
            note("ok")
            return result
        return awrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            note(_refusal(exc))
            raise
        note("ok")
        return result
    return wrapper


def instrument() -> None:
    """Wrap every enumerated method (before the test modules import the SDK's names)."""
    for modname, classes in CLASSES.items():
        mod = importlib.import_module(modname)
        for cname in classes:
            cls = getattr(mod, cname)
            for attr, raw in list(vars(cls).items()):
                if attr.startswith("_"):
                    continue
                row = f"{cname}.{attr}"
                if isinstance(raw, staticmethod):
                    setattr(cls, attr, staticmethod(_recorder(row, raw.__func__)))
                elif isinstance(raw, classmethod):
                    setattr(cls, attr, classmethod(_recorder(row, raw.__func__)))
                elif inspect.isfunction(raw):
                    setattr(cls, attr, _recorder(row, raw))
                else:
                    continue
                _rows.append(row)
    for modname, fns in FUNCTIONS.items():
        mod = importlib.import_module(modname)
        for fname in fns:
            setattr(mod, fname, _recorder(f"{modname}.{fname}", getattr(mod, fname)))
            _rows.append(f"{modname}.{fname}")


def start(item: pytest.Item) -> None:
    _current[0] = item.name


def record(item: pytest.Item, report: pytest.TestReport) -> None:
    # A teardown error is left out: the last test's teardown also runs the session's
    # fixtures (tests/conftest.py's host-wide leak check), which says nothing of its calls.
    if report.when == "call" or (report.when == "setup" and not report.passed):
        _tests[item.name] = report.outcome
    if report.when == "teardown":
        _current[0] = ""


def _status(row: str) -> tuple[str, str]:
    by_test = _calls.get(row, {})
    ran = {t: o for t, o in by_test.items() if _tests.get(t) in ("passed", "failed")}
    tests = ", ".join(f"`{t}`" for t in sorted(ran))
    if not ran:
        note = NOTES.get(row.split(".")[0]) or NOTES.get(row.split(".")[-1]) or ""
        return "not covered" + (f": {note}" if note else ""), ""
    if any(_tests[t] == "failed" for t in ran):
        return "FAILING", tests
    outcomes = set().union(*ran.values())
    if "ok" in outcomes:
        return "served", tests
    return "refused (" + ", ".join(f"`{o}`" for o in sorted(outcomes)) + ")", tests


def write() -> None:
    target = os.environ.get(ENV)
    if not target or not _tests:
        return
    version = importlib.metadata.version("tensorlake")
    lines = ["# tensorlake SDK compatibility (generated)", "",
             f"Generated by `make compat-tensorlake` from `tests/compat/test_tensorlake_*.py` with "
             f"`tensorlake=={version}` (tests/compat/tl_table.py). Do not edit: rerun.", "",
             "Every public method of the installed SDK's classes is listed. *served*: a passing test called "
             "it and it returned; *refused (Error)*: every call raised that error in a test that expected it; "
             "*not covered*: no test called it.", ""]
    counts: dict[str, int] = defaultdict(int)
    body: list[str] = []
    section = None
    for row in _rows:
        group = row.rsplit(".", 1)[0]
        if group != section:
            section = group
            body += ["", f"## `{group}`", "", "| call | status | tests |", "|---|---|---|"]
        status, tests = _status(row)
        counts["not covered" if status.startswith("not covered") else status.split(" ")[0]] += 1
        body.append(f"| `{row}` | {status} | {tests} |")
    lines.append("Totals: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + ".")
    Path(target).write_text("\n".join(lines + body) + "\n")
