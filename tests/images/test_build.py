"""Dockerfile builds with buildah: the instructions, the layer cache, multi-stage,
failures that leave nothing behind, and bad input answered before any work."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from cellbox.errors import CellboxError, InvalidRequest, NotFound
from cellbox.images.build import BuildRequest

from .conftest import Images, write_context

DOCKERFILE = """
    ARG BASE=cellbox/debian
    FROM ${BASE}
    ARG GREETING=hello
    ENV APP_HOME=/app GREETING=${GREETING}
    WORKDIR /app
    COPY hello.txt ./
    ADD data.tar /app/unpacked/
    RUN echo "token {token}" > /app/token && rm -f /etc/motd && useradd -m -u 1234 appuser
    USER appuser
    ENTRYPOINT ["/bin/sh", "-c"]
    CMD ["echo ready"]
"""


def _tar(path: Path) -> None:
    import io
    import tarfile

    with tarfile.open(path, "w") as tar:
        data = b"from a tarball\n"
        info = tarfile.TarInfo("inside.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def test_build_every_instruction_then_cached(images: Images, sandboxes, tmp_path: Path) -> None:
    token = secrets.token_hex(8)  # a RUN step the cache has never seen: a cold build
    ctx = write_context(tmp_path / "ctx", DOCKERFILE.replace("{token}", token),
                        {"hello.txt": "hi\n", "secret.txt": "do not ship\n", ".dockerignore": "secret.txt\n"})
    _tar(ctx / "data.tar")
    name = images.track(f"test/build-{token}")
    lines: list[str] = []
    info = images.lt.run(images.im.build(
        BuildRequest(name=name, context=ctx, build_args={"GREETING": "hey"}), lines.append), timeout=600)
    assert info.kind == "oci" and info.source == "build" and info.digest
    assert any("STEP" in line for line in lines), "no build progress was reported"
    assert info.config["WorkingDir"] == "/app"
    assert info.config["User"] == "appuser"
    assert info.config["Entrypoint"] == ["/bin/sh", "-c"] and info.config["Cmd"] == ["echo ready"]
    assert "GREETING=hey" in info.config["Env"]

    rec = sandboxes.create(image=name)
    assert rec.image == f"{name}:latest"
    out = sandboxes.sh(rec, 'id -u; pwd; echo "$GREETING $APP_HOME"; cat hello.txt token unpacked/inside.txt; '
                            'test -e /etc/motd && echo motd-present; test -e secret.txt && echo secret-present; true')
    assert out["stdout"] == ["1234", "/app", "hey /app", "hi", f"token {token}", "from a tarball"], out

    # Unchanged rebuild: every step from the cache, same manifest, no new unpack.
    again: list[str] = []
    info2 = images.lt.run(images.im.build(
        BuildRequest(name=name, context=ctx, build_args={"GREETING": "hey"}), again.append), timeout=600)
    assert info2.digest == info.digest
    assert any("Using cache" in line for line in again)
    assert not any(line.startswith("unpacking") for line in again)


def test_multi_stage_and_target(images: Images, sandboxes, tmp_path: Path) -> None:
    token = secrets.token_hex(6)
    ctx = write_context(tmp_path / "ctx", f"""
        FROM cellbox/debian AS builder
        RUN mkdir /out && echo "built {token}" > /out/artifact && echo junk > /out/junk

        FROM cellbox/debian AS tester
        RUN echo tester > /stage

        FROM cellbox/debian
        COPY --from=builder /out/artifact /opt/artifact
    """)
    final = images.track(f"test/multi-{token}")
    images.lt.run(images.im.build(BuildRequest(name=final, context=ctx), lambda _: None), timeout=600)
    rec = sandboxes.create(image=final)
    out = sandboxes.sh(rec, "cat /opt/artifact; ls /out 2>&1 >/dev/null | head -1; cat /stage 2>/dev/null; true")
    assert out["stdout"][0] == f"built {token}", out
    assert "tester" not in out["out"]

    only = images.track(f"test/multi-target-{token}")
    images.lt.run(images.im.build(BuildRequest(name=only, context=ctx, target="tester"), lambda _: None),
                  timeout=600)
    rec2 = sandboxes.create(image=only)
    assert sandboxes.sh(rec2, "cat /stage")["out"].strip() == "tester"


def test_failed_build_leaves_nothing(images: Images, manager, tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "ctx", """
        FROM cellbox/debian
        RUN echo step-one-output && exit 3
    """)
    name = images.track(f"test/fails-{secrets.token_hex(4)}")
    lines: list[str] = []
    with pytest.raises(CellboxError) as err:
        images.lt.run(images.im.build(BuildRequest(name=name, context=ctx), lines.append), timeout=600)
    assert err.value.status == 422 and err.value.code == "BUILD_FAILED"
    assert "step-one-output" in "\n".join(lines)
    assert name + ":latest" not in manager.images.refs()
    with pytest.raises(NotFound):
        images.im.describe(name)
    # The build's network namespace is gone with its record.
    from cellbox.manager.images import BUILD_NAMESPACE

    assert not [r for r in manager.store.list(BUILD_NAMESPACE, live_only=True)]


@pytest.mark.parametrize(
    ("name", "dockerfile", "files", "code"),
    [
        ("Bad Name!", "FROM cellbox/debian\n", {}, "INVALID_REQUEST"),
        ("test/ok", None, {}, "DOCKERFILE_NOT_FOUND"),
        ("127.0.0.1:5000/remote", "FROM cellbox/debian\n", {}, "INVALID_REQUEST"),
        ("test/nofrom", "RUN true\n", {}, "INVALID_REQUEST"),
        ("test/unknown-base", "FROM no/such-image\n", {}, "IMAGE_NOT_FOUND"),
    ],
)
def test_bad_input_is_refused_before_building(images: Images, tmp_path: Path, name: str, dockerfile: str | None,
                                               files: dict[str, str], code: str) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    if dockerfile is not None:
        (ctx / "Dockerfile").write_text(dockerfile)
    images.track(name) if code == "IMAGE_NOT_FOUND" else None
    with pytest.raises(CellboxError) as err:
        images.lt.run(images.im.build(BuildRequest(name=name, context=ctx), lambda _: None))
    assert err.value.code == code, err.value
    assert 400 <= err.value.status < 500
    assert isinstance(err.value, (InvalidRequest, NotFound))
