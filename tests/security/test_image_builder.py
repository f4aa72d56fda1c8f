"""The image builder as an attacker uses it: a Dockerfile is the attacker's program.

Hole 0 of the walls issue: buildah 1.28 (Debian 12) resolves a ``RUN --mount`` bind
source taken ``from=`` another stage on the *host* (CVE-2024-1753), so a stage holding
``/hostroot -> /`` mounts the host's root into the RUN step. Every test here judges from
the host: a sentinel file only the host has must not be read, and nothing may be created
on the host. The refusals come from ``images/dockerfile_check.py`` (before anything
runs); the bypass probes check that check against the ways buildah's parser reads a
line (case, JSON form, continuations, ONBUILD, parser directives, base images' triggers).
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import httpx
import pytest

from cellbox.errors import CellboxError, InvalidRequest
from cellbox.images.build import BuildRequest, validate

from ..keys import auth
from ..images.conftest import Images, context_tar, images, prune_build_cache_at_end, write_context  # noqa: F401 - fixtures
from ..sdk.live_server import LiveServer, acquire, release

pytestmark = pytest.mark.root


def _host_sentinel(tmp_path: Path) -> tuple[Path, str, Path]:
    """A file only the host has (with a secret), and a path the attack tries to create."""
    secret = secrets.token_hex(16)
    sentinel = tmp_path / "host-only-sentinel"
    sentinel.write_text(secret)
    return sentinel, secret, tmp_path / "created-by-build"


def _build(images: Images, name: str, ctx: Path, lines: list[str]) -> CellboxError | None:
    """Run the build; the refusal it met, or None if it ran to the end."""
    try:
        images.lt.run(images.im.build(BuildRequest(name=name, context=ctx), lines.append), timeout=600)
    except CellboxError as exc:
        return exc
    return None


def test_cve_2024_1753_mount_from_symlink_stage_cannot_reach_the_host(images: Images, tmp_path: Path) -> None:
    sentinel, secret, planted = _host_sentinel(tmp_path)
    ctx = write_context(tmp_path / "ctx", f"""
        FROM cellbox/debian AS link
        RUN ln -s / /hostroot

        FROM cellbox/debian
        RUN --mount=type=bind,from=link,source=/hostroot,target=/h,rw \\
            (cat /h{sentinel} > /stolen || true) && (echo pwned > /h{planted} || true)
    """)
    name = images.track(f"test/sec-cve-{secrets.token_hex(4)}")
    lines: list[str] = []
    refused = _build(images, name, ctx, lines)
    # Judged from the host: nothing was created there, and no image holds the secret.
    assert not planted.exists(), f"the build wrote {planted} on the host"
    assert refused is not None, "the build ran"
    assert refused.status == 400 and refused.code == "DOCKERFILE_REFUSED", refused
    assert "line 5" in str(refused) and "--mount" in str(refused), refused
    assert not any("STEP" in line for line in lines), "a step ran before the refusal"


def test_cpp_preprocessed_dockerfile_cannot_include_host_files(images: Images, tmp_path: Path) -> None:
    """buildah runs a Dockerfile whose name ends in ``.in`` through the host's ``cpp``:
    ``#include`` then reads any host file into the build (and ``#define`` could build
    a line no check sees). Judged by whether the host file's secret reached the build."""
    sentinel, secret, _ = _host_sentinel(tmp_path)
    sentinel.write_text(f"RUN echo leaked-{secret}\n")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile.in").write_text(f'FROM cellbox/debian\n#include "{sentinel}"\n')
    name = images.track(f"test/sec-cpp-{secrets.token_hex(4)}")
    lines: list[str] = []
    try:
        images.lt.run(images.im.build(BuildRequest(name=name, context=ctx, dockerfile="Dockerfile.in"),
                                      lines.append), timeout=600)
        refused = None
    except CellboxError as exc:
        refused = exc
    assert secret not in "\n".join(lines), "a host file was read into the build"
    assert refused is not None and refused.code == "DOCKERFILE_REFUSED", refused


def test_copy_from_a_symlink_stage_stays_in_that_stage(images: Images, sandboxes, tmp_path: Path) -> None:
    """The allowed cousin of the CVE: ``COPY --from=`` a stage through its ``/hostroot -> /``
    link. buildah's copier resolves it chrooted in the stage, so it copies the stage's
    own file, never the host's (a regression guard: this passes on main too)."""
    sentinel, secret, _ = _host_sentinel(tmp_path)
    ctx = write_context(tmp_path / "ctx", f"""
        FROM cellbox/debian AS link
        RUN ln -s / /hostroot && mkdir -p {sentinel.parent} && echo stage-own > {sentinel}

        FROM cellbox/debian
        COPY --from=link /hostroot{sentinel} /copied
    """)
    name = images.track(f"test/sec-copy-{secrets.token_hex(4)}")
    assert _build(images, name, ctx, []) is None
    rec = sandboxes.create(image=name)
    out = sandboxes.sh(rec, "cat /copied")["out"]
    assert secret not in out and out.strip() == "stage-own", out


def test_add_url_cannot_reach_host_loopback(images: Images, tmp_path: Path) -> None:
    """``ADD http://...`` is fetched by buildah itself, in the host's network namespace,
    not the build's: it reaches services on the host's loopback (this server's API, a
    cloud metadata proxy) that a sandbox can never reach. Judged by the host-side
    server's own log of requests."""
    import http.server
    import threading

    secret = secrets.token_hex(16)
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            hits.append(self.path)
            body = secret.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        ctx = write_context(tmp_path / "ctx", f"FROM cellbox/debian\nADD http://127.0.0.1:{port}/secret /s\n")
        name = images.track(f"test/sec-add-{secrets.token_hex(4)}")
        refused = _build(images, name, ctx, [])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    assert hits == [], f"the build fetched {hits} from the host's loopback"
    assert refused is not None and refused.code == "DOCKERFILE_REFUSED" and "line 2" in str(refused), refused


# Each of these must be refused before any step runs, naming the line. The first
# column is the line number the error must name.
BYPASSES = [
    ("lower-case instruction and flag", 2, "FROM cellbox/debian\nrun --MOUNT=type=bind,source=/,target=/h true\n"),
    ("flag with a quoted name", 2, 'FROM cellbox/debian\nRUN "--mount=type=bind,from=x,source=/,target=/h" true\n'),
    ("JSON form after the flag", 2, 'FROM cellbox/debian\nRUN --mount=type=bind,from=x,target=/h ["cat", "/h/x"]\n'),
    ("ARG expansion in the flag", 3, "FROM cellbox/debian\nARG X=type=bind,from=x,target=/h\nRUN --mount=${X} true\n"),
    ("ONBUILD carries it", 2, "FROM cellbox/debian\nONBUILD RUN --mount=type=bind,from=x,target=/h true\n"),
    ("onbuild lower-case", 2, "FROM cellbox/debian\nonbuild run --mount=type=cache,target=/c true\n"),
    ("continuation splits the flag", 2, "FROM cellbox/debian\nRUN --mo\\\nunt=type=bind,from=x,target=/h true\n"),
    ("comment inside a continuation", 2,
     "FROM cellbox/debian\nRUN \\\n# hidden\n  --mount=type=bind,from=x,target=/h true\n"),
    ("blank line inside a continuation", 2, "FROM cellbox/debian\nRUN \\\n\n --mount=type=bind,target=/h true\n"),
    ("escape directive changes the continuation", 1,
     "# escape=`\nFROM cellbox/debian\nRUN echo `\n --mount=type=bind,from=x,target=/h true\n"),
    ("syntax directive (a frontend we do not run)", 1, "# syntax=docker/dockerfile:1\nFROM cellbox/debian\n"),
    ("cache mount (shared by every build on the host)", 2,
     "FROM cellbox/debian\nRUN --mount=type=cache,id=../../../..,target=/c ls /c\n"),
    ("secret mount", 2, "FROM cellbox/debian\nRUN --mount=type=secret,id=x true\n"),
    ("security insecure", 2, "FROM cellbox/debian\nRUN --security=insecure true\n"),
    ("host network", 2, "FROM cellbox/debian\nRUN --network=host true\n"),
    ("device", 2, "FROM cellbox/debian\nRUN --device=/dev/sda true\n"),
    ("ADD from a URL (fetched by the host)", 2, "FROM cellbox/debian\nADD http://127.0.0.1:8900/sandboxes /x\n"),
    ("ADD from git", 2, "FROM cellbox/debian\nADD git@example.invalid:a/b.git /x\n"),
    ("heredoc", 2, "FROM cellbox/debian\nRUN <<EOF\nRUN --mount=type=bind,target=/h true\nEOF\n"),
    ("FROM a host file through a transport", 1, "FROM docker-archive:/tmp/evil.tar\nRUN true\n"),
    ("FROM transport after a continuation", 1, "FROM \\\n# cellbox/debian\n  oci:/var/lib/cellbox/oci:x\n"),
    ("CRLF line ends", 2, "FROM cellbox/debian\r\nRUN --mount=type=bind,from=x,target=/h true\r\n"),
    ("tab before the flag", 2, "FROM cellbox/debian\nRUN\t--mount=type=bind,from=x,target=/h true\n"),
    ("unicode case folding", 2, "FROM cellbox/debian\nRUN --mount=type=BIND,from=x,target=/h true\n"),
]


@pytest.mark.parametrize(("why", "line", "dockerfile"), BYPASSES, ids=[b[0] for b in BYPASSES])
def test_bypasses_of_the_check_are_refused(tmp_path: Path, why: str, line: int, dockerfile: str) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_bytes(dockerfile.encode())
    with pytest.raises(InvalidRequest) as err:
        validate(BuildRequest(name="test/sec-bypass", context=ctx))
    assert err.value.status == 400 and err.value.code == "DOCKERFILE_REFUSED", (why, err.value)
    assert f"line {line}" in str(err.value), (why, err.value)


ALLOWED = [
    "FROM cellbox/debian AS a\nRUN echo mount --network-timeout=3 > /x\n"
    "FROM cellbox/debian\nCOPY --from=a --chown=0:0 /x /y\nRUN --mount=type=tmpfs,target=/scratch ls /scratch\n",
    'FROM cellbox/debian\nRUN ["sh", "-c", "echo hi"]\nCMD ["sleep", "1"]\n# a comment\nENV A=b\n',
    'FROM cellbox/debian\nRUN bash -c \'cat <<< "here-string"; echo $((1<<3))\'\n',
    "FROM cellbox/debian\nADD data.tar /app/\nRUN apt-get install -y --no-install-recommends \\\n    curl\n",
]


@pytest.mark.parametrize("dockerfile", ALLOWED)
def test_ordinary_dockerfiles_pass_the_check(tmp_path: Path, dockerfile: str) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    validate(BuildRequest(name="test/sec-ok", context=ctx))


@pytest.mark.parametrize(("config_key", "onbuild_key"), [("config", "OnBuild"), ("Config", "onbuild")])
def test_base_image_onbuild_trigger_is_refused(images: Images, tmp_path: Path, config_key: str,
                                               onbuild_key: str) -> None:
    """A base image (pulled, or written into the layout) whose config carries an ONBUILD
    trigger with a mount: buildah would run it in the child build's first step. Go's
    JSON decoding matches keys case-insensitively, so ``Config``/``onbuild`` count too."""
    sentinel, secret, planted = _host_sentinel(tmp_path)
    store = images.manager.images
    link = images.track(f"test/sec-link-{secrets.token_hex(4)}")  # an image holding /hostroot -> /
    link_ctx = write_context(tmp_path / "link", "FROM cellbox/debian\nRUN ln -s / /hostroot\n")
    assert _build(images, link, link_ctx, []) is None
    base = images.track(f"test/sec-onbuild-{secrets.token_hex(4)}")
    digest = store.refs()["cellbox/debian:latest"]
    manifest = store.manifest(digest)
    config = store.image_config(manifest)
    config[config_key] = dict(config.pop("config", {}))
    config[config_key][onbuild_key] = [
        f"RUN --mount=type=bind,from={link},source=/hostroot,target=/h,rw echo pwned > /h{planted}"]
    cfg_digest, cfg_size = store._put_bytes(json.dumps(config).encode())
    manifest = dict(manifest, config=dict(manifest["config"], digest=cfg_digest, size=cfg_size))
    m_digest, m_size = store._put_bytes(json.dumps(manifest).encode())
    from cellbox.storage.images import layout_lock

    with layout_lock(store.layout):
        store._set_ref(base + ":latest", m_digest, m_size)
    ctx = write_context(tmp_path / "ctx", f"FROM {base}\nRUN cat /etc/hostname\n")
    name = images.track(f"test/sec-onbuild-child-{secrets.token_hex(4)}")
    refused = _build(images, name, ctx, [])
    assert not planted.exists(), f"an ONBUILD trigger of the base wrote {planted} on the host"
    assert refused is not None, "the build ran"
    assert refused.status == 400 and refused.code == "DOCKERFILE_REFUSED", refused
    assert "ONBUILD" in str(refused) and base in str(refused), refused
    assert sentinel.read_text() == secret


@pytest.fixture(scope="module")
def live_server():  # noqa: ANN201
    server = acquire()
    try:
        yield server
    finally:
        release()




def test_api_answers_400_naming_the_line(live_server: LiveServer) -> None:
    """Through the real server: a plain 400 (not a 200 stream that fails later)."""
    df = "FROM cellbox/debian AS link\nRUN ln -s / /hostroot\nFROM cellbox/debian\n" \
         "RUN --mount=type=bind,from=link,source=/hostroot,target=/h,rw ls /h\n"
    try:
        r = httpx.post(f"{live_server.api_url}/images/build", params={"name": "test/sec-api"},
                       content=context_tar({"Dockerfile": df}), headers=auth(), timeout=120)
    finally:
        httpx.delete(f"{live_server.api_url}/images/test/sec-api", headers=auth(), timeout=120)  # made only if the build ran
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["code"] == "DOCKERFILE_REFUSED" and "line 4" in body["error"], body
