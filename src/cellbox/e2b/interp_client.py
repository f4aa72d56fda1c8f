"""The code interpreter's client half, run INSIDE the sandbox after ``interp_kernel.py``.

``interp_kernel_src.SOURCE`` is the two files' text joined (the kernel's first) and
run as ``python3 -S -c SOURCE MODE ...``; see ``interp_kernel.py`` for the modes and
the frame format. The import below is for linters only: run as one text, the names
are already defined above it.
"""

import json
import os
import socket
import sys
import time

try:
    from .interp_kernel import DIR, default_cwd, kernel_main, meta_path, recv_msg, send_msg, sock_path
except ImportError:  # run as ``python3 -c``: defined by the kernel's half of the text
    pass

PIECE = 60000

def out(frame):
    line = json.dumps(frame)
    while len(line) > PIECE:
        sys.stdout.write("+" + line[:PIECE] + "\n")
        line = line[PIECE:]
    sys.stdout.write("=" + line + "\n")
    sys.stdout.flush()


def spawn(ctx, cwd):
    """Start a kernel daemon (double fork, own session, stdio on /dev/null): this
    program's code is already loaded, so the grandchild just becomes the kernel."""
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            try:
                kernel_main(ctx, cwd)
            finally:
                os._exit(1)
        os._exit(0)
    os.wait()


def connect(ctx, wait):
    deadline = time.monotonic() + wait
    while True:
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(sock_path(ctx))
            return s
        except OSError:
            s.close()
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.01)


def start(ctx, cwd):
    cwd = cwd or default_cwd()
    if not os.path.isdir(cwd):
        out({"type": "cbx_error", "code": "BAD_CWD", "value": "cwd %r is not a directory in the sandbox" % cwd})
        return None
    os.makedirs(DIR, mode=0o700, exist_ok=True)
    spawn(ctx, cwd)
    conn = connect(ctx, 15.0)
    if conn is None:
        out({"type": "cbx_error", "code": "KERNEL_START_FAILED", "value": "the kernel did not start in 15 s"})
    return conn


def client_exec(ctx, cwd, envs, code):
    conn = connect(ctx, 0)
    if conn is None and ctx.startswith("default-"):
        conn = start(ctx, cwd)
        if conn is None:
            return 1
    if conn is None:
        out({"type": "cbx_error", "code": "CONTEXT_NOT_FOUND", "value": "context %r not found" % ctx})
        return 1
    send_msg(conn, {"code": code, "envs": envs})
    while True:
        frame = recv_msg(conn)
        if frame is None:
            out({"type": "cbx_error", "code": "KERNEL_DIED", "value": "the kernel ended during the execution"})
            return 1
        out(frame)
        if frame.get("type") == "cbx_done":
            return 0


def contexts():
    found = []
    for name in sorted(os.listdir(DIR)) if os.path.isdir(DIR) else []:
        if name.endswith(".json") and os.path.exists(sock_path(name[:-5])):
            try:
                with open(os.path.join(DIR, name)) as f:
                    found.append(json.load(f))
            except (OSError, ValueError):
                continue
    return found


def remove(ctx):
    conn = connect(ctx, 0)
    if conn is None:
        out({"type": "cbx_error", "code": "CONTEXT_NOT_FOUND", "value": "context %r not found" % ctx})
        return None
    meta = {}
    try:
        with open(meta_path(ctx)) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        pass
    send_msg(conn, {"op": "shutdown"})
    recv_msg(conn)
    for path in (sock_path(ctx), meta_path(ctx)):
        try:
            os.unlink(path)
        except OSError:
            pass
    return meta


def main(argv):
    mode = argv[1]
    if mode == "kernel":
        return kernel_main(argv[2], argv[3])
    if mode == "exec":
        return client_exec(argv[2], argv[3], json.loads(argv[4]), "".join(argv[5:]))
    if mode == "create":
        cwd = argv[3] or default_cwd()
        conn = start(argv[2], cwd)
        if conn is None:
            return 1
        conn.close()
        out({"type": "cbx_context", "id": argv[2], "language": "python", "cwd": cwd})
        return 0
    if mode == "list":
        for meta in contexts():
            out({"type": "cbx_context", "id": meta.get("id"), "language": meta.get("language"), "cwd": meta.get("cwd")})
        return 0
    if mode in ("remove", "restart"):
        meta = remove(argv[2])
        if meta is None:
            return 1
        if mode == "restart":
            conn = start(argv[2], str(meta.get("cwd") or "/"))
            if conn is None:
                return 1
            conn.close()
        out({"type": "cbx_ok"})
        return 0
    out({"type": "cbx_error", "code": "BAD_MODE", "value": "unknown mode %r" % mode})
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
