"""One sandbox's page: terminal (echo, stty size following the viewport, re-attach
after reload), files (upload read back through the SDK, download), snapshot and
clone from the UI."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import Project, shot, wait_js


@pytest.fixture
def box(project: Project) -> str:
    return project.create(name=f"box-{project.name}")


def term_text(page: Any, index: int = 0) -> str:
    return str(page.evaluate("""(i) => { const b = window.cellboxTerms[i].term.buffer.active; const out = [];
        for (let n = 0; n < b.length; n++) out.push(b.getLine(n).translateToString(true));
        return out.join('\\n'); }""", index))


def wait_text(page: Any, pattern: str, index: int = 0, timeout: float = 45.0) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while True:
        text = term_text(page, index)
        if m := re.search(pattern, text):
            return m
        assert time.monotonic() < deadline, f"{pattern!r} not in the terminal:\n{text}"
        time.sleep(0.1)


def sizes(page: Any) -> list[tuple[int, int]]:
    """Every ``stty size`` answer printed so far (rows, cols)."""
    return [(int(r), int(c)) for r, c in re.findall(r"sz:(\d+) (\d+)", term_text(page))]


def open_terminal(page: Any) -> None:
    wait_js(page, "() => window.cellboxTerms && window.cellboxTerms.length > 0 && window.cellboxTerms[0].open")
    page.locator("#terminals .term").first.click()


def test_terminal_echo_resize_and_reattach(member_page: Any, box: str):
    page = member_page
    page.goto(f"/ui/sandboxes/{box}")
    open_terminal(page)
    page.keyboard.type("echo h''i; echo sz:$(stty size)\n")  # the typed line's echo matches neither
    wait_text(page, r"\nhi\s*\nsz:\d+ \d+")
    before = sizes(page)[-1]
    try:  # a few chart points for the screenshot (the stats feed itself is tested below)
        wait_js(page, "() => window.cellboxCharts && window.cellboxCharts.mem.data[0].length >= 4", timeout=15)
    except AssertionError:
        pass
    shot(page, "sandbox")
    page.set_viewport_size({"width": 800, "height": 600})
    wait_js(page, "(c) => window.cellboxTerms[0].term.cols !== c", before[1])
    page.keyboard.type("echo sz:$(stty size)\n")
    deadline = time.monotonic() + 45
    while len(found := sizes(page)) < 2:
        assert time.monotonic() < deadline, term_text(page)
        time.sleep(0.1)
    after = found[-1]
    assert after != before, (before, after)
    assert after == (page.evaluate("window.cellboxTerms[0].term.rows"), page.evaluate("window.cellboxTerms[0].term.cols"))
    # A reload re-attaches to the same PTY session: its shell remembers a variable.
    first = page.evaluate("window.cellboxTerms[0].sessionId")
    page.keyboard.type("MARK=kept-$((6*7))\n")
    page.reload()
    open_terminal(page)
    assert page.evaluate("window.cellboxTerms[0].sessionId") == first
    page.keyboard.type("echo $MARK\n")
    wait_text(page, r"kept-42")
    # A second tab is a second shell; closing it ends its PTY session for good.
    page.click("#term-new")
    wait_js(page, "() => window.cellboxTerms.length === 2 && window.cellboxTerms[1].open")
    second = page.evaluate("window.cellboxTerms[1].sessionId")
    assert second != first
    page.keyboard.type("echo tab-$((1+1))\n")
    wait_text(page, r"\ntab-2", index=1)
    page.locator("#term-tabs .tab-close").nth(1).click()
    wait_js(page, "(id) => !sessionStorage.getItem('cellbox-pty-' + document.getElementById('terminals')"
                  ".dataset.sandbox).includes(id)", second)
    token = page.locator("meta[name=csrf-token]").get_attribute("content")
    again = page.request.post(f"/ui/sandboxes/{box}/pty/{second}/close", headers={"X-CSRF-Token": token})
    assert again.status == 404  # already closed


def test_upload_download_files(member_page: Any, box: str, project: Project, tmp_path: Path):
    page = member_page
    page.goto(f"/ui/sandboxes/{box}?path=/tmp")
    page.locator("#files table[data-path='/tmp']").wait_for()
    local = tmp_path / "hello.txt"
    local.write_bytes(b"uploaded from the browser\n\x00\x01binary")
    page.set_input_files("#upload-input", str(local))
    page.locator("#files td", has_text="hello.txt").wait_for()
    page.evaluate("""() => { const dt = new DataTransfer();
        dt.items.add(new File(["dropped by drag and drop"], "dropped.txt"));
        document.getElementById("dropzone").dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true})); }""")
    page.locator("#files td", has_text="dropped.txt").wait_for()
    sbx = project.sdk.connect(box)
    try:
        assert sbx.read_file("/tmp/hello.txt") == local.read_bytes()
        assert sbx.read_file("/tmp/dropped.txt") == b"dropped by drag and drop"
        sbx.write_file("/tmp/from-sdk.txt", "written by the SDK")
        page.evaluate("document.body.dispatchEvent(new Event('files-changed'))")
        link = page.locator("#files tr", has_text="from-sdk.txt").locator("a[download]")
        with page.expect_download() as info:
            link.click()
        assert Path(info.value.path()).read_text() == "written by the SDK"
        # Edit a small text file in place.
        page.locator("#files tr", has_text="from-sdk.txt").locator("text=edit").click()
        page.fill("#editor textarea", "edited in the browser")
        page.click("#editor button")
        page.locator("#editor .ok").wait_for()
        assert sbx.read_file("/tmp/from-sdk.txt") == b"edited in the browser"
    finally:
        sbx.close()
    # Path tricks stay inside the sandbox: the agent answers, never the host.
    resp = page.request.get(f"/ui/sandboxes/{box}/files/download?path=/../../etc/shadow")
    assert resp.status in (200, 403, 404)  # the sandbox's own /etc/shadow or a refusal
    assert b"cellbox" not in resp.body() or resp.status != 200


def test_snapshot_and_clone_from_the_ui(member_page: Any, box: str, project: Project):
    page = member_page
    page.goto(f"/ui/sandboxes/{box}")
    page.click("#take-snapshot")
    made = page.locator("#snapshot-made")
    made.wait_for(timeout=90_000)
    snap_id = made.get_attribute("data-snapshot")
    assert snap_id in {s.id for s in project.sdk.list_snapshots()}
    page.click(f"#restore-{snap_id}")
    restored = page.locator("#flash a")
    restored.wait_for(timeout=90_000)
    new_id = restored.get_attribute("href").rsplit("/", 1)[1]
    assert project.sdk.get(new_id).id == new_id
    page.click("#clone")
    clones = page.locator("#snap-result .clones a")
    clones.first.wait_for(timeout=120_000)
    clone_id = clones.first.get_attribute("href").rsplit("/", 1)[1]
    assert project.sdk.get(clone_id).status == "running"
    page.goto("/ui/snapshots")
    assert snap_id in page.content()
    shot(page, "snapshots")
    page.on("dialog", lambda d: d.accept())
    page.click(f"#delete-{snap_id}")
    page.locator("#flash", has_text="deleted snapshot").wait_for()
    assert snap_id not in {s.id for s in project.sdk.list_snapshots()}


def test_processes_stdin_signal_and_logs(member_page: Any, box: str):
    page = member_page
    page.goto(f"/ui/sandboxes/{box}")
    page.fill("#start-process input[name=command]", "sh -c 'read x; echo got:$x'")
    page.click("#start-process button")
    row = page.locator("#process-table tr", has_text="read x")
    try:
        row.wait_for()
    except Exception:
        raise AssertionError(f"not started; flash: {page.locator('#flash').inner_text()!r}") from None
    row.locator("text=output").click()
    page.fill("#output input[name=text]", "hello")
    page.click("#output button")
    page.locator("#output pre", has_text="got:hello").wait_for()
    page.fill("#start-process input[name=command]", "sleep 300")
    page.click("#start-process button")
    sleeper = page.locator("#process-table tr", has_text="sleep 300")
    sleeper.locator("button", has_text="TERM").click()
    page.locator("#process-table tr", has_text="sleep 300").filter(has_text="signaled").wait_for()
    page.locator("#log-lines", has_text="got:hello").wait_for(timeout=60_000)
    # A command line the shell splitter cannot read is a 400 in the flash area.
    page.fill("#start-process input[name=command]", "echo 'unclosed")
    page.click("#start-process button")
    assert "command" in page.locator("#flash .error").inner_text()


def test_network_policy_suspend_resume_and_live_stats(member_page: Any, box: str, project: Project):
    page = member_page
    page.goto(f"/ui/sandboxes/{box}")
    # Live stats: the charts' feed sends a sample a second (read from the host's cgroup).
    cookie = next(c for c in page.context.cookies() if c["name"] == "cellbox_session")
    with httpx.Client(base_url=page.url.split("/ui/")[0], cookies={"cellbox_session": cookie["value"]}) as http:
        with http.stream("GET", f"/ui/sandboxes/{box}/stats", timeout=30) as resp:
            data = next(line for line in resp.iter_lines() if line.startswith("data: "))
    sample = json.loads(data.removeprefix("data: "))
    assert sample["status"] == "running" and sample["memory_mb"] > 0 and sample["cpu"] is not None
    # Network policy, live.
    page.fill("form[hx-post$='/network'] input[name=allow_out]", "10.0.0.0/8")
    page.click("form[hx-post$='/network'] button")
    page.locator("#flash", has_text="network policy").wait_for()
    assert project.sdk.get(box).raw["network_policy"]["allow_out"] == ["10.0.0.0/8"]
    # Suspend and resume (a named sandbox) from its page.
    page.click("section.overview button:has-text('Suspend')")
    deadline = time.monotonic() + 90
    while project.sdk.get(box).status != "suspended":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    page.locator("#status", has_text="suspended").wait_for(timeout=60_000)  # the page's feed saw it
    page.click("section.overview button:has-text('Resume')")
    page.locator("#status", has_text="running").wait_for(timeout=90_000)
