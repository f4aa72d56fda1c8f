"""The code interpreter's kernel and its client, run INSIDE the sandbox (stdlib only).

Never imported by the host: ``interp_kernel_src.py`` joins this file's text and
``interp_client.py``'s into one program, run as ``python3 -S -c`` through the agent.
Its modes (argv[1]):

* ``exec CTX CWD ENVS_JSON CODE...``: connect to context CTX's kernel (starting it if
  CTX is the language's default and it is not running), send the code (split over
  several arguments: one argument is at most 128 KiB), relay the kernel's frames to
  stdout, one per line.
* ``create CTX CWD``: start a kernel for CTX and wait until it listens.
* ``list`` / ``remove CTX`` / ``restart CTX``.

A kernel is a daemon (its own session, stdio on /dev/null) listening on
``/tmp/.cellbox-ci/CTX.sock``; its state (globals) lives as long as it does, so
variables persist between ``run_code`` calls. It runs one execution at a time.

Frames are JSON objects (ASCII). On stdout each is one line: ``=JSON`` or, for a frame
longer than a line the agent keeps whole (64 KiB), ``+piece`` lines then ``=last``.
The host trusts none of it (``interp_frames.py`` checks every frame).
"""

import ast
import base64
import json
import linecache
import os
import socket
import struct
import sys
import threading
import time
import traceback

DIR = "/tmp/.cellbox-ci"


def sock_path(ctx):
    return os.path.join(DIR, ctx + ".sock")


def meta_path(ctx):
    return os.path.join(DIR, ctx + ".json")


def send_msg(sock, obj, lock=None):
    data = json.dumps(obj).encode()
    blob = struct.pack(">I", len(data)) + data
    if lock is None:
        sock.sendall(blob)
        return
    with lock:
        sock.sendall(blob)


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def recv_msg(sock):
    head = recv_exact(sock, 4)
    if head is None:
        return None
    body = recv_exact(sock, struct.unpack(">I", head)[0])
    return None if body is None else json.loads(body)


def now_ns():
    return time.time_ns()


# ---------------------------------------------------------------- kernel side
class Stream:
    """sys.stdout / sys.stderr of the executing code: whole lines become frames."""

    def __init__(self, kernel, name):
        self.kernel = kernel
        self.name = name
        self.buf = ""
        self.encoding = "utf-8"

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError("write() argument must be str")
        self.buf += text
        if "\n" in self.buf:
            cut = self.buf.rindex("\n") + 1
            self.kernel.emit({"type": self.name, "text": self.buf[:cut], "timestamp": now_ns()})
            self.buf = self.buf[cut:]
        return len(text)

    def flush(self):
        if self.buf:
            self.kernel.emit({"type": self.name, "text": self.buf, "timestamp": now_ns()})
            self.buf = ""

    def isatty(self):
        return False

    def fileno(self):
        return 1 if self.name == "stdout" else 2


MARK = b"\x00cbx-sync\x00"


class FdPump(threading.Thread):
    """What subprocesses write to fd 1/2 (a pipe each), as stdout/stderr frames.

    ``sync`` writes a marker into the pipe and waits for the pump to reach it: all a
    cell's subprocesses wrote before it ended has then been sent."""

    def __init__(self, kernel, fd, name):
        super().__init__(daemon=True)
        self.kernel, self.name, self.fd = kernel, name, fd
        self.read_fd, write_fd = os.pipe()
        os.dup2(write_fd, fd)
        os.close(write_fd)
        self.synced = threading.Event()

    def run(self):
        pending = b""
        while True:
            data = os.read(self.read_fd, 65536)
            if not data:
                return
            pending += data
            while MARK in pending:
                before, pending = pending.split(MARK, 1)
                self.send(before)
                self.synced.set()
            keep = next((n for n in range(len(MARK) - 1, 0, -1) if pending.endswith(MARK[:n])), 0)
            self.send(pending[:len(pending) - keep])
            pending = pending[len(pending) - keep:]

    def send(self, data):
        if data:
            self.kernel.emit({"type": self.name, "text": data.decode("utf-8", "replace"), "timestamp": now_ns()})

    def sync(self):
        self.synced.clear()
        try:
            os.write(self.fd, MARK)
        except OSError:
            return
        self.synced.wait(1.0)


class Kernel:
    def __init__(self, ctx):
        self.ctx = ctx
        self.globals = {"__name__": "__main__", "__builtins__": __builtins__}
        self.count = 0
        self.conn = None
        self.lock = threading.Lock()
        self.pumps = []

    def emit(self, frame):
        conn = self.conn
        if conn is None:
            return
        try:
            send_msg(conn, frame, self.lock)
        except OSError:
            self.conn = None

    def serve(self, listener):
        while True:
            try:
                conn, _ = listener.accept()
            except (KeyboardInterrupt, OSError):  # a late interrupt of a finished cell
                continue
            try:
                self.handle(conn)
            except BaseException:
                pass
            finally:
                self.conn = None
                conn.close()

    def handle(self, conn):
        req = recv_msg(conn)
        if not isinstance(req, dict):
            return
        if req.get("op") == "shutdown":
            send_msg(conn, {"type": "cbx_bye"})
            os._exit(0)
        self.conn = conn
        self.emit({"type": "cbx_accepted"})
        watcher = threading.Thread(target=watch_disconnect, args=(self, conn), daemon=True)
        watcher.start()
        envs = req.get("envs")
        self.execute(str(req.get("code", "")), envs if isinstance(envs, dict) else {})
        self.conn = None  # first: the client's close after this is no interrupt
        send_msg(conn, {"type": "cbx_done"}, self.lock)

    def execute(self, code, envs):
        self.count += 1
        saved = {k: os.environ.get(k) for k in envs}
        os.environ.update({str(k): str(v) for k, v in envs.items()})
        out, err = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = Stream(self, "stdout"), Stream(self, "stderr")
        try:
            value = self.run_cell(code)
            if value is not None:
                self.emit(result_frame(value))
        except BaseException as exc:  # the cell's own error, SystemExit and interrupts too
            sys.stdout.flush()
            sys.stderr.flush()
            self.emit(error_frame(exc))
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            sys.stdout, sys.stderr = out, err
            for pump in self.pumps:
                pump.sync()
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            self.emit({"type": "number_of_executions", "execution_count": self.count})

    def run_cell(self, code):
        """exec the cell; the value of its last line when that is an expression (IPython's rule)."""
        name = "<cell-%d>" % self.count
        linecache.cache[name] = (len(code), None, code.splitlines(True), name)  # tracebacks show the lines
        tree = ast.parse(code, name, "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, name, "exec"), self.globals)
        if last is None:
            return None
        value = eval(compile(last, name, "eval"), self.globals)
        self.globals["_"] = value
        return value


def watch_disconnect(kernel, conn):
    """The client went (timeout, disconnect): interrupt the running cell, as Jupyter does."""
    import _thread

    try:
        while conn.recv(1):
            pass
    except OSError:
        pass
    if kernel.conn is conn:
        kernel.conn = None
        _thread.interrupt_main()


MIME = (("text/html", "_repr_html_", "html"), ("text/markdown", "_repr_markdown_", "markdown"),
        ("image/svg+xml", "_repr_svg_", "svg"), ("image/png", "_repr_png_", "png"),
        ("image/jpeg", "_repr_jpeg_", "jpeg"), ("text/latex", "_repr_latex_", "latex"),
        ("application/json", "_repr_json_", "json"), ("application/javascript", "_repr_javascript_", "javascript"))


def result_frame(value):
    frame = {"type": "result", "text": safe_repr(value), "is_main_result": True}
    for _mime, method, key in MIME:
        fn = getattr(value, method, None)
        if not callable(fn):
            continue
        try:
            got = fn()
        except Exception:
            continue
        if isinstance(got, bytes):
            got = base64.b64encode(got).decode()
        if got is not None:
            frame[key] = got
    return frame


def safe_repr(value):
    try:
        return repr(value)
    except Exception as exc:
        return "<repr failed: %s>" % type(exc).__name__


def error_frame(exc):
    tb = exc.__traceback__
    while tb is not None and not tb.tb_frame.f_code.co_filename.startswith("<cell"):
        tb = tb.tb_next  # the kernel's own frames are not the user's business
    lines = traceback.format_exception(type(exc), exc, tb)
    return {"type": "error", "name": type(exc).__name__, "value": str(exc), "traceback": "".join(lines)}


def default_cwd():
    for path in ("/home/user", os.environ.get("HOME") or "/"):
        if os.path.isdir(path):
            return path
    return "/"


def kernel_main(ctx, cwd):
    import site

    site.main()  # the client runs with -S (faster start); the kernel wants site-packages
    os.makedirs(DIR, mode=0o700, exist_ok=True)
    os.chdir(cwd)
    kernel = Kernel(ctx)
    for fd, name in ((1, "stdout"), (2, "stderr")):
        pump = FdPump(kernel, fd, name)
        pump.start()
        kernel.pumps.append(pump)
    path = sock_path(ctx)
    if os.path.exists(path):
        os.unlink(path)
    with open(meta_path(ctx) + ".tmp", "w") as f:
        json.dump({"id": ctx, "language": "python", "cwd": cwd, "pid": os.getpid()}, f)
    os.rename(meta_path(ctx) + ".tmp", meta_path(ctx))
    # Bound at its final name, not renamed into place: CRIU (pause/resume) re-creates a
    # listening socket at the name it was bound to. Clients retry until listen().
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    sys.path.insert(0, "")
    kernel.serve(listener)
