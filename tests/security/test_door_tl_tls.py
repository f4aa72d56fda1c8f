"""The tensorlake SDK over TLS with a custom CA, from another network namespace (issue 12, gap 2).

Finding (tensorlake 0.5.163): its HTTP client is Rust (``tensorlake/_cloud_sdk.abi3.so``:
reqwest 0.13.3 + rustls 0.23; ``sandbox/client.py`` imports ``CloudSandboxClient`` from
it; no Python-side ``verify``/CA option exists in ``sandbox/client.py`` or
``async_client.py``). The module embeds Mozilla's roots (their DER subjects, e.g.
"ISRG Root X1", are in the binary) and verifies against them only: with
``SSL_CERT_FILE`` naming our CA *and* the namespace's ``/etc/ssl`` replaced by a store
holding only our CA, the handshake fails ``UnknownIssuer``, and under ``strace`` the
client never opens either file (the ``SSL_CERT_*`` strings of rustls-native-certs are
linked in but unused). So a custom CA cannot work for it: over TLS it needs a
publicly trusted certificate (or TLS ended in front of cellbox by a proxy that has
one); with a key over plain HTTP it works (``test_door_remote.py``).

This test pins that finding, so an SDK release that starts honouring the system store
or ``SSL_CERT_FILE`` turns it red, and the docs and this test can then claim support.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from pathlib import Path

from .test_door_remote import NS, VENV, TLSServer, _member_key, remote_net, tls_server  # noqa: F401


def test_tensorlake_sdk_trusts_only_its_built_in_roots(tls_server: TLSServer, tmp_path: Path):
    key = _member_key(tls_server)
    code = f"""
        import os
        os.environ["TENSORLAKE_SANDBOX_API_URL"] = "{tls_server.url}"
        from tensorlake.sandbox import Sandbox
        try:
            Sandbox.create(api_url="{tls_server.url}", memory_mb=256).terminate()
            print("CONNECTED")
        except Exception as exc:
            print("REFUSED", exc)
    """
    env = {"PATH": os.environ["PATH"], "HOME": "/nonexistent", "TENSORLAKE_API_KEY": key,
           "CELLBOX_DATA_DIR": "/nonexistent", "SSL_CERT_FILE": str(tls_server.ca), "TENSORLAKE_MAX_RETRIES": "0"}
    argv = ["ip", "netns", "exec", NS, str(VENV / "python"), "-c", textwrap.dedent(code)]
    trace = tmp_path / "trace"
    if shutil.which("strace"):
        argv = ["strace", "-f", "-qq", "-e", "trace=open,openat", "-o", str(trace), *argv]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=240, env=env)
    said = res.stdout + res.stderr
    assert "REFUSED" in res.stdout and "UnknownIssuer" in said, said[-3000:]
    assert "CONNECTED" not in res.stdout
    # Our own clients in the same namespace, same environment, trust the CA (test_door_remote.py);
    # the SDK did not even read it.
    if trace.exists():
        opened = trace.read_text()
        assert str(tls_server.ca) not in opened and "ca-certificates.crt" not in opened, \
            [line for line in opened.splitlines() if "cert" in line][:20]
