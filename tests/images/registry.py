"""A real OCI registry on loopback for the tests: Debian's ``docker-registry`` (the CNCF
distribution server), with htpasswd (bcrypt) auth, its storage in a temp directory.

Started by the test session, killed by its PID at teardown, its directory removed.
Images are pushed to it with skopeo from cellbox's own OCI layout.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BINARY = "/usr/bin/docker-registry"
USER, PASSWORD = "cellbox-test", "s3cret-pw"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Registry:
    host: str  # "127.0.0.1:PORT"
    proc: subprocess.Popen[bytes]
    root: Path

    def push(self, oci_layout: Path, source_ref: str, dest: str) -> str:
        """Copy ``source_ref`` from an OCI layout to ``host/dest``; returns the pushed digest."""
        digest_file = self.root / "digest"
        subprocess.run(
            ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", f"{USER}:{PASSWORD}",
             "--digestfile", str(digest_file), f"oci:{oci_layout}:{source_ref}", f"docker://{self.host}/{dest}"],
            check=True, capture_output=True, timeout=600,
        )
        return digest_file.read_text().strip()

    def log(self) -> str:
        return (self.root / "registry.log").read_text(errors="replace")[-3000:]


def start() -> Registry:
    root = Path(tempfile.mkdtemp(prefix="cellbox-registry-"))
    try:
        pw_hash = subprocess.run(["htpasswd", "-nbB", USER, PASSWORD], check=True, capture_output=True,
                                 text=True).stdout.strip()
        (root / "htpasswd").write_text(pw_hash + "\n")
        port = _free_port()
        (root / "config.yml").write_text(
            "version: 0.1\n"
            "log: {level: warn}\n"
            f"storage: {{filesystem: {{rootdirectory: {root / 'data'}}}, delete: {{enabled: true}}}}\n"
            f"http: {{addr: 127.0.0.1:{port}}}\n"
            f"auth: {{htpasswd: {{realm: cellbox-test, path: {root / 'htpasswd'}}}}}\n"
        )
        log = open(root / "registry.log", "wb")
        proc = subprocess.Popen([BINARY, "serve", str(root / "config.yml")], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        log.close()
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    reg = Registry(f"127.0.0.1:{port}", proc, root)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            stop(reg)
            raise RuntimeError(f"docker-registry exited: {reg.log()}")
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return reg
        except OSError:
            time.sleep(0.05)
    stop(reg)
    raise RuntimeError("docker-registry did not listen within 20 s")


def forget_credentials(reg: Registry, auth_file: Path) -> None:
    """Remove what cellbox stored for this registry (``skopeo login`` during a pull)."""
    if auth_file.exists():
        subprocess.run(["skopeo", "logout", "--authfile", str(auth_file), reg.host], capture_output=True)
        assert reg.host not in auth_file.read_text(), f"credentials for {reg.host} left in {auth_file}"


def stop(reg: Registry) -> None:
    if reg.proc.poll() is None:
        os.kill(reg.proc.pid, signal.SIGTERM)
        try:
            reg.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(reg.proc.pid, signal.SIGKILL)
            reg.proc.wait(10)
    shutil.rmtree(reg.root, ignore_errors=True)


def available() -> bool:
    return os.path.exists(BINARY) and shutil.which("htpasswd") is not None
