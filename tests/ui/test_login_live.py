"""Login (none / wrong / good key) and the live list: a sandbox the SDK creates shows
up in an open page without a reload."""

from __future__ import annotations

from typing import Any

from ..api.conftest import ServerProcess
from .conftest import Project, new_page, shot, wait_js


def test_no_session_wrong_key_good_key(browser: Any, server: ServerProcess, project: Project):
    page = new_page(browser, server)
    try:
        page.goto("/ui/sandboxes")  # no session: the login page
        assert page.url.endswith("/ui/login")
        assert page.locator("input[name=api_key]").is_visible()
        shot(page, "login")
        page.fill("input[name=api_key]", "cbx_" + "0" * 16 + "_" + "0" * 64)  # well-formed, unknown
        page.click("button[type=submit]")
        assert "invalid API key" in page.locator("#login-error").inner_text()
        page.fill("input[name=api_key]", project.key)
        page.click("button[type=submit]")
        page.wait_for_url("**/ui/sandboxes")
        assert page.locator("#project").inner_text() == project.name
        assert page.locator("#rows tr.empty").count() == 1  # a fresh project: nothing yet
        cookie = next(c for c in page.context.cookies() if c["name"] == "cellbox_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
        assert project.key not in page.content()  # the key is not in the page
        page.click("#logout")
        page.wait_for_url("**/ui/login")
        page.goto("/ui/sandboxes")
        assert page.url.endswith("/ui/login")  # logged out for good
    finally:
        page.context.close()


def test_sdk_create_appears_without_reload(member_page: Any, project: Project):
    page = member_page
    wait_js(page, "() => document.getElementById('rows').dataset.updated !== undefined")  # the feed is live
    loads = page.evaluate("performance.getEntriesByType('navigation').length")
    sbx = project.sdk.create(name="live-one", wait=False)  # pending at first, then running
    page.locator(f"#row-{sbx.id}").wait_for()
    page.locator(f"#row-{sbx.id}[data-status=running]").wait_for(timeout=60_000)
    assert page.evaluate("performance.getEntriesByType('navigation').length") == loads  # no reload
    assert "live-one" in page.locator(f"#row-{sbx.id}").inner_text()
    shot(page, "sandboxes")
    # Terminated elsewhere: the row goes away, again without a reload.
    project.sdk.delete(sbx.id)
    page.locator(f"#row-{sbx.id}").wait_for(state="detached")


def test_create_and_bulk_terminate_from_the_ui(member_page: Any, project: Project):
    page = member_page
    page.fill("#create input[name=name]", "from-ui")
    page.fill("#create input[name=memory_mb]", "512")
    page.click("#create button[type=submit]")
    page.locator("#flash >> text=creating").wait_for()
    row = page.locator("#rows tr", has_text="from-ui")
    row.wait_for()
    sid = row.get_attribute("id").removeprefix("row-")
    assert project.sdk.get(sid).memory_mb == 512
    page.locator(f"#row-{sid}[data-status=running]").wait_for(timeout=60_000)
    page.check(f"#row-{sid} input[name=ids]")
    page.on("dialog", lambda d: d.accept())
    page.click("#bulk button[value=terminate]")
    page.locator(f"#row-{sid}").wait_for(state="detached")
    assert project.sdk.get(sid).status == "terminated"
    # Bad input is a clear 4xx in the flash area, nothing made.
    page.fill("#create input[name=name]", "Bad Name!")
    page.click("#create button[type=submit]")
    assert "name" in page.locator("#flash .error").inner_text()
