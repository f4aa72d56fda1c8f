"""The images page: an admin builds from an uploaded Dockerfile and watches its log
live; member keys cannot change the shared catalog."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import httpx

from ..api.conftest import ServerProcess
from ..keys import auth
from .conftest import Project


def test_build_from_an_uploaded_dockerfile_streams_its_log(admin_page: Any, server: ServerProcess, tmp_path: Path):
    name = f"ui-test/built-{secrets.token_hex(3)}"
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM cellbox/debian:latest\nRUN echo built-by-the-console > /built.txt\n")
    page = admin_page
    page.goto("/ui/images")
    try:
        page.fill("#build-form input[name=name]", name)
        page.set_input_files("#dockerfile-input", str(dockerfile))
        page.click("#build-form button")
        page.locator("#jobs .job-log", has_text="RUN echo built-by-the-console").wait_for(timeout=120_000)
        page.locator("#job-outcome", has_text="done").wait_for(timeout=180_000)
        info = httpx.get(f"{server.url}/images/{name}", headers=auth())
        assert info.status_code == 200, info.text
    finally:
        httpx.delete(f"{server.url}/images/{name}", headers=auth(), timeout=120)
    # A name the catalog refuses is a 4xx in the flash area, no job started.
    page.fill("#build-form input[name=name]", "Not A Name!")
    page.click("#build-form button")
    assert "name" in page.locator("#flash .error").inner_text()


def test_members_cannot_change_the_catalog(member_page: Any, server: ServerProcess, project: Project):
    page = member_page
    page.goto("/ui/images")
    assert page.locator("#build-form").count() == 0
    cookie = next(c for c in page.context.cookies() if c["name"] == "cellbox_session")
    token = page.locator("meta[name=csrf-token]").get_attribute("content")
    with httpx.Client(base_url=server.url, cookies={"cellbox_session": cookie["value"]},
                      headers={"X-CSRF-Token": token}) as http:
        assert http.post("/ui/images/pull", data={"image": "127.0.0.1:5000/x/y:z"}).status_code == 403
        assert http.post("/ui/images/build?name=x/y", content=b"FROM scratch\n").status_code == 403
        assert http.post("/ui/images/cellbox/debian:latest/warm", data={"size": "3"}).status_code == 403
