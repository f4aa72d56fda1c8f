"""The console's browser tests: Debian's Chromium driven by Playwright, against the
real ``cellbox server`` (``tests/api/conftest.py``'s session fixture).

Never ``playwright install``: browser downloads fail on these machines; Playwright
drives ``/usr/bin/chromium``. Each test gets fresh browser contexts (no shared cookies
or storage); every test logs in with a member key of a project of its own (``Project``),
so its list shows only what it made and cleanup deletes by project.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cellbox.sdk import SandboxClient

from ..api.conftest import SDK_CREATE_HEADERS, ServerProcess, server  # noqa: F401  (the session fixture)
from ..keys import admin_key, auth

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
TIMEOUT_MS = 45_000  # generous: the host is shared and often loaded; nothing here is timed


# Package scope, not session: Playwright's sync API keeps an event loop running on this
# thread while it is open, and every later test that calls asyncio.run() (tests/unit/
# runs after tests/ui/) failed with "cannot be called from a running event loop".
@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} missing (scripts/setup.sh --test installs chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        # launch() gives the browser a fresh temporary user-data-dir of its own.
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="session", autouse=True)
def no_unhandled_errors(server: ServerProcess) -> Iterator[None]:  # noqa: F811
    """The console's routes (WebSockets and streams too, which the server fixture's own
    check of 500 answers misses) must never end in an unhandled exception."""
    start = server.log_path.stat().st_size if server.log_path.exists() else 0
    yield
    with open(server.log_path, errors="replace") as f:
        f.seek(start)
        log = f.read()
    assert "Exception in ASGI application" not in log, log[log.find("Exception in ASGI"):][:3000]


class Project:
    """A project of this test's own, with a member key; deletes its sandboxes and
    snapshots at the end and revokes its keys."""

    def __init__(self, srv: ServerProcess, role: str = "member") -> None:
        self.srv = srv
        self.name = f"ui-{secrets.token_hex(4)}"
        self.http = httpx.Client(base_url=srv.url, headers=auth(), timeout=120)
        resp = self.http.post("/keys", json={"project": self.name, "role": role, "name": "ui test"})
        assert resp.status_code == 201, resp.text
        self.key, self.key_id = resp.json()["key"], resp.json()["id"]
        self.key_ids = [self.key_id]
        self.sdk = SandboxClient(api_url=srv.url, api_key=self.key)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def create(self, **body: Any) -> str:
        resp = httpx.post(f"{self.srv.url}/sandboxes", json=body, headers={**SDK_CREATE_HEADERS, **self.headers()},
                          timeout=120)
        assert resp.status_code == 200, resp.text
        return str(resp.json()["sandbox_id"])

    def cleanup(self) -> None:
        ns = f"/v1/namespaces/{self.name}"
        for sbx in self.http.get(f"{ns}/sandboxes", params={"status": "all"}).json()["sandboxes"]:
            if sbx["status"] not in ("terminated", "failed"):
                self.http.delete(f"{ns}/sandboxes/{sbx['id']}")
        for snap in self.http.get(f"{ns}/snapshots").json().get("snapshots", []):
            self.http.delete(f"{ns}/snapshots/{snap['id']}")
        for key_id in self.key_ids:
            self.http.delete(f"/keys/{key_id}")
        self.sdk.close()
        self.http.close()


@pytest.fixture
def project(server: ServerProcess) -> Iterator[Project]:  # noqa: F811
    p = Project(server)
    try:
        yield p
    finally:
        p.cleanup()


@pytest.fixture
def other_project(server: ServerProcess) -> Iterator[Project]:  # noqa: F811
    p = Project(server)
    try:
        yield p
    finally:
        p.cleanup()


def new_page(browser: Any, srv: ServerProcess, viewport: dict[str, int] | None = None) -> Any:
    context = browser.new_context(base_url=srv.url, viewport=viewport or {"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    return context.new_page()


def login(page: Any, key: str) -> None:
    page.goto("/ui/login")
    page.fill("input[name=api_key]", key)
    page.click("button[type=submit]")
    page.wait_for_url("**/ui/sandboxes")


@pytest.fixture
def admin_page(browser: Any, server: ServerProcess) -> Iterator[Any]:  # noqa: F811
    page = new_page(browser, server)
    login(page, admin_key())
    try:
        yield page
    finally:
        page.context.close()


@pytest.fixture
def member_page(browser: Any, server: ServerProcess, project: Project) -> Iterator[Any]:  # noqa: F811
    page = new_page(browser, server)
    login(page, project.key)
    try:
        yield page
    finally:
        page.context.close()


def shot(page: Any, name: str) -> None:
    """A screenshot for docs/screenshots (kept current by the tests)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    tmp = SHOTS / f".{name}.png"
    page.screenshot(path=str(tmp), full_page=True)
    shutil.move(tmp, SHOTS / f"{name}.png")


def wait_js(page: Any, expression: str, arg: Any = None, timeout: float = 45.0) -> Any:
    """Poll ``expression`` (a JS function) until it returns something truthy.

    Not ``page.wait_for_function``: its polling evaluates a string in the page, which
    the console's CSP (no 'unsafe-eval') rightly refuses; ``evaluate`` goes through the
    DevTools protocol, outside the page's CSP."""
    import time
    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(expression, arg)
        if value:
            return value
        assert time.monotonic() < deadline, f"still false after {timeout}s: {expression}"
        time.sleep(0.05)
