"""The syscall and capability matrix: what a sandbox's root may ask of the kernel.

One program runs inside a real sandbox and tries each call (every risky one in a
forked child, so a call that unexpectedly succeeds cannot change the prober itself);
each row below is then asserted with the errno we expect. The walls are the seccomp
profile (``runtime/seccomp.json``, moby's rules) and the capability set
(``runtime/bundle.py``, Docker's minus ``CAP_NET_RAW``). Where it matters (kernel
keys, chroot), the result is judged from the host.

x86_64 only: the syscall numbers are the x86_64 ones (the only architecture cellbox
runs on today).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from ..conftest import Sandboxes
from .conftest import run_python, run_python_json

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(platform.machine() != "x86_64", reason="x86_64 syscall numbers"),
]

EPERM, ENOSYS = errno.EPERM, errno.ENOSYS

# Runs inside the sandbox. probe(fn) forks; the child runs fn and reports 0 (the call
# succeeded) or the errno; a raw clone's child leaves at once with os._exit.
PROBER = r"""
import ctypes, errno, json, os, socket, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
K = {k: v for k, v in json.loads(sys.argv[1]).items()}

def sc(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
    return r, ctypes.get_errno()

def probe(fn):
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rd)
        try:
            res = fn()
        except OSError as e:
            res = e.errno
        except Exception as e:
            res = repr(e)
        os.write(wr, json.dumps(res).encode())
        os._exit(0)
    os.close(wr)
    data = b""
    while chunk := os.read(rd, 4096):
        data += chunk
    os.waitpid(pid, 0)
    return json.loads(data) if data else "no answer"

def call(nr, *args, ok=lambda r: r >= 0):
    def fn():
        r, e = sc(nr, *args)
        if r == 0 and nr in (56, 435):  # clone/clone3: in the child
            os._exit(0)
        if ok(r):
            if nr in (56, 435):
                os.waitpid(r, 0)
            return 0
        return e
    return probe(fn)

def sock(family, type_, proto=0):
    def fn():
        socket.socket(family, type_, proto).close()
        return 0
    return probe(fn)

s = lambda t: ctypes.c_char_p(t.encode())
buf = ctypes.create_string_buffer(256)
AT_FDCWD = -100
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET, CLONE_NEWPID = 0x20000, 0x10000000, 0x40000000, 0x20000000
SIGCHLD = 17
clone_args = struct.pack("QQQQQQQQ", 0, 0, 0, 0, SIGCHLD, 0, 0, 0)  # struct clone_args v0
r = {}
r["fork"] = probe(lambda: 0)                                # clone(SIGCHLD): must work
r["clone_newuser"] = call(56, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0)
r["clone_newnet"] = call(56, CLONE_NEWNET | SIGCHLD, 0, 0, 0, 0)
r["clone_newns"] = call(56, CLONE_NEWNS | SIGCHLD, 0, 0, 0, 0)
r["clone_newpid"] = call(56, CLONE_NEWPID | SIGCHLD, 0, 0, 0, 0)
r["clone3"] = call(435, ctypes.c_char_p(clone_args), len(clone_args))
r["unshare_user_net"] = call(272, CLONE_NEWUSER | CLONE_NEWNET)
r["unshare_ns"] = call(272, CLONE_NEWNS)
r["setns"] = probe(lambda: sc(308, os.open("/proc/self/ns/net", os.O_RDONLY), 0)[1] or 0)
r["mount"] = call(165, s("none"), s("/mnt"), s("tmpfs"), 0, 0)
r["umount2"] = call(166, s("/proc"), 2)                      # MNT_DETACH
r["fsopen"] = call(430, s("tmpfs"), 0)
r["fsconfig"] = call(431, 3, 6, 0, 0, 0)                     # FSCONFIG_CMD_CREATE on a non-fd
r["fsmount"] = call(432, 3, 0, 0)
r["fspick"] = call(433, AT_FDCWD, s("/"), 0)
r["open_tree"] = call(428, AT_FDCWD, s("/"), 0)              # without OPEN_TREE_CLONE: no cap needed
r["open_tree_clone"] = call(428, AT_FDCWD, s("/"), 1)        # OPEN_TREE_CLONE
r["move_mount"] = call(429, AT_FDCWD, s("/tmp"), AT_FDCWD, s("/mnt"), 0)
r["mount_setattr"] = call(442, AT_FDCWD, s("/"), 0, ctypes.c_char_p(bytes(32)), 32)
r["keyctl_get_user_keyring"] = call(250, 0, -4, 0)          # KEYCTL_GET_KEYRING_ID, @u
r["keyctl_search_host_key"] = call(250, 10, -4, s("user"), s(K["desc"]), 0)  # KEYCTL_SEARCH
r["keyctl_read_host_key"] = call(250, 11, K["kid"], buf, 256)                 # KEYCTL_READ
r["keyctl_unlink_host_key"] = call(250, 9, K["kid"], -4)                     # KEYCTL_UNLINK from @u
r["add_key"] = call(248, s("user"), s("cellbox-probe"), s("x"), 1, -2)       # @p
r["request_key"] = call(249, s("user"), s(K["desc"]), 0, 0)
r["bpf"] = call(321, 0, ctypes.c_char_p(bytes(128)), 128)    # BPF_MAP_CREATE
r["perf_event_open"] = call(298, ctypes.c_char_p(struct.pack("II", 1, 128) + bytes(120)), 0, -1, -1, 0)
r["userfaultfd"] = call(323, 1)                              # UFFD_USER_MODE_ONLY
r["io_uring_setup"] = call(425, 1, ctypes.c_char_p(bytes(120)))
r["io_uring_enter"] = call(426, 0, 0, 0, 0, 0, 0)
r["io_uring_register"] = call(427, 0, 0, 0, 0)
r["af_packet"] = sock(socket.AF_PACKET, socket.SOCK_RAW, 0x0300)
r["sock_raw"] = sock(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
r["af_vsock"] = sock(40, socket.SOCK_STREAM)
r["icmp_dgram"] = sock(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
def pidfd_getfd_pid1():                                     # take fd 3 of the agent
    pidfd, e = sc(434, 1, 0)                                 # pidfd_open(1)
    if pidfd < 0:
        return e
    got, e = sc(438, pidfd, 3, 0)
    return 0 if got >= 0 else e
r["pidfd_getfd_pid1"] = probe(pidfd_getfd_pid1)
r["kcmp"] = call(312, 1, os.getpid(), 0, 0, 0)
r["init_module"] = call(175, 0, 0, s(""))
r["finit_module"] = call(313, 0, s(""), 0)
r["delete_module"] = call(176, s("nonexistent"), 0)
r["kexec_load"] = call(246, 0, 0, 0, 0)
r["kexec_file_load"] = call(320, -1, -1, 0, s(""), 0)
r["reboot"] = call(169, 0, 0, 0, 0)                          # bad magic: EINVAL if it got through
r["swapon"] = call(167, s("/nonexistent"), 0)
r["swapoff"] = call(168, s("/nonexistent"))
r["settimeofday"] = call(164, 0, 0)
r["clock_settime"] = call(227, 0, ctypes.c_char_p(bytes(16)))
r["acct"] = call(163, 0)
r["syslog"] = call(103, 3, buf, 256)                         # SYSLOG_ACTION_READ_ALL
r["iopl"] = call(172, 3)
r["ioperm"] = call(173, 0x80, 1, 1)
r["quotactl"] = call(179, 0, s("/"), 0, 0)
r["open_by_handle_at"] = call(304, AT_FDCWD, ctypes.c_char_p(bytes(64)), 0)
r["fanotify_init"] = call(300, 0, 0)
r["lookup_dcookie"] = call(212, 0, buf, 256)
r["sethostname"] = call(170, s("x"), 1)
r["setdomainname"] = call(171, s("x"), 1)
r["vhangup"] = call(153)
r["personality_read_implies_exec"] = call(135, 0x0400000)
r["personality_query"] = call(135, 0xffffffff)
r["ptrace_traceme"] = call(101, 0, 0, 0, 0)                  # PTRACE_TRACEME: strace-style use works
print(json.dumps(r))
"""

# What each probe must give: an errno, or 0 for "works" (things a sandbox must keep).
EXPECTED: dict[str, int] = {
    "fork": 0,
    "clone_newuser": EPERM, "clone_newnet": EPERM, "clone_newns": EPERM, "clone_newpid": EPERM,
    "clone3": ENOSYS,
    "unshare_user_net": EPERM, "unshare_ns": EPERM,
    "setns": EPERM,
    "mount": EPERM, "umount2": EPERM, "fsopen": EPERM, "fsconfig": EPERM, "fsmount": EPERM,
    "fspick": EPERM, "open_tree": EPERM, "open_tree_clone": EPERM, "move_mount": EPERM,
    "mount_setattr": EPERM,
    "keyctl_get_user_keyring": EPERM, "keyctl_search_host_key": EPERM, "keyctl_read_host_key": EPERM,
    "keyctl_unlink_host_key": EPERM, "add_key": EPERM,
    "request_key": EPERM,
    "bpf": EPERM, "perf_event_open": EPERM, "userfaultfd": EPERM,
    "io_uring_setup": EPERM, "io_uring_enter": EPERM, "io_uring_register": EPERM,
    "af_packet": EPERM, "sock_raw": EPERM, "af_vsock": EPERM,
    "icmp_dgram": 0,  # ping without CAP_NET_RAW (net.ipv4.ping_group_range)
    "pidfd_getfd_pid1": EPERM, "kcmp": EPERM,
    "init_module": EPERM, "finit_module": EPERM, "delete_module": EPERM,
    "kexec_load": EPERM, "kexec_file_load": EPERM, "reboot": EPERM,
    "swapon": EPERM, "swapoff": EPERM, "settimeofday": EPERM, "clock_settime": EPERM,
    "acct": EPERM, "syslog": EPERM, "iopl": EPERM, "ioperm": EPERM, "quotactl": EPERM,
    "open_by_handle_at": EPERM, "fanotify_init": EPERM, "lookup_dcookie": EPERM,
    "sethostname": EPERM, "setdomainname": EPERM, "vhangup": EPERM,
    "personality_read_implies_exec": EPERM, "personality_query": 0,
    "ptrace_traceme": 0,
}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
KEY_SPEC_USER_KEYRING = -4
KEYCTL_READ, KEYCTL_UNLINK = 11, 9


def _host_keyctl(*args: Any) -> int:
    r = _libc.syscall(ctypes.c_long(250), *args)
    if r < 0:
        raise OSError(ctypes.get_errno(), "keyctl")
    return int(r)


@pytest.fixture(scope="module")
def host_key() -> Iterator[tuple[str, int]]:
    """A key in host root's user keyring, the kind of secret a sandbox must not see."""
    desc = f"cellbox-test-{secrets.token_hex(6)}"
    payload = b"host secret"
    kid = _libc.syscall(ctypes.c_long(248), b"user", desc.encode(), payload, len(payload),
                        ctypes.c_long(KEY_SPEC_USER_KEYRING))
    if kid < 0:
        pytest.skip(f"cannot add a key on the host: errno {ctypes.get_errno()}")
    yield desc, kid
    try:
        _host_keyctl(ctypes.c_long(KEYCTL_UNLINK), ctypes.c_long(kid), ctypes.c_long(KEY_SPEC_USER_KEYRING))
    except OSError:
        pass




@pytest.fixture(scope="module")
def matrix(box, host_key) -> dict[str, Any]:
    sb, rec = box
    code = f"import sys; sys.argv[1:] = [{json.dumps(json.dumps({'desc': host_key[0], 'kid': host_key[1]}))}]\n" + PROBER
    return run_python_json(sb, rec, code)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_syscall_matrix(matrix, name):
    want = EXPECTED[name]
    got = matrix[name]
    label = lambda v: "works" if v == 0 else (errno.errorcode.get(v, v) if isinstance(v, int) else v)  # noqa: E731
    assert got == want, f"{name}: got {label(got)}, want {label(want)}"


def test_host_key_unchanged_and_unreadable(matrix, host_key):
    """The host's key survives the attempts (still linked in host root's keyring,
    payload intact) and the sandbox learnt nothing of it."""
    desc, kid = host_key
    buf = ctypes.create_string_buffer(64)
    n = _host_keyctl(ctypes.c_long(KEYCTL_READ), ctypes.c_long(kid), buf, ctypes.c_long(64))
    assert buf.raw[:n] == b"host secret"
    found = _libc.syscall(ctypes.c_long(250), ctypes.c_long(10), ctypes.c_long(KEY_SPEC_USER_KEYRING),
                          b"user", desc.encode(), ctypes.c_long(0))  # KEYCTL_SEARCH
    assert found == kid, "the host's key was unlinked from host root's keyring"
    assert matrix["keyctl_search_host_key"] != 0
    assert matrix["keyctl_get_user_keyring"] != 0


def test_unshare_command_fails(box):
    """``unshare -Urn`` (a user + net namespace with every capability in it) fails."""
    sb, rec = box
    res = sb.sh(rec, "unshare -Urn id -u 2>&1; echo rc=$?")
    assert "rc=0" not in res["out"], res
    assert "Operation not permitted" in res["out"], res


CHROOT_ESCAPE = r"""
import json, os, sys
marker = sys.argv[1]
os.makedirs("/tmp/jail/inner", exist_ok=True)
fd = os.open("/", os.O_RDONLY)
os.chroot("/tmp/jail")              # CAP_SYS_CHROOT is kept (Docker's set): this works
os.fchdir(fd)                       # the classic escape: a directory fd from outside the chroot
for _ in range(64):
    os.chdir("..")
os.chroot(".")
print(json.dumps({"cellbox_root": os.path.isdir("/.cellbox"), "sees_host_marker": os.path.exists(marker),
                  "root_entries": sorted(os.listdir("/"))[:50]}))
"""


def test_chroot_escape_stays_in_the_sandbox(box, tmp_path):
    """The fchdir/chdir('..') chroot escape ends at the sandbox's own root (pivot_root),
    never at the host's: a marker file made on the host's /tmp is not visible."""
    sb, rec = box
    marker = f"/tmp/cellbox-chroot-marker-{secrets.token_hex(6)}"
    with open(marker, "w") as f:
        f.write("host")
    try:
        code = f"import sys; sys.argv[1:] = [{marker!r}]\n" + CHROOT_ESCAPE
        out = run_python_json(sb, rec, code)
    finally:
        os.unlink(marker)
    assert out["cellbox_root"] is True, out
    assert out["sees_host_marker"] is False, out


def test_ping_works_without_cap_net_raw(box):
    """An ICMP echo over a datagram socket (what ping does without CAP_NET_RAW) gets a reply."""
    sb, rec = box
    code = (
        "import socket,struct,json\n"
        "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM,socket.IPPROTO_ICMP);s.settimeout(5)\n"
        "s.sendto(struct.pack('!BBHHH',8,0,0,0,1)+b'cellbox',('127.0.0.1',0))\n"
        "d,a=s.recvfrom(1024);print(json.dumps({'type':d[0],'from':a[0]}))"
    )
    out = run_python_json(sb, rec, code)
    assert out == {"type": 0, "from": "127.0.0.1"}, out


def test_capabilities_have_no_net_raw(box):
    """CapEff of the tenant's root: Docker's default set without CAP_NET_RAW (bit 13)."""
    sb, rec = box
    res = run_python(sb, rec, "print(open('/proc/self/status').read())")
    caps = {line.split(":")[0]: int(line.split()[1], 16) for line in res["out"].splitlines() if line.startswith("Cap")}
    for kind in ("CapEff", "CapPrm", "CapBnd"):
        assert not caps[kind] & (1 << 13), f"{kind} has CAP_NET_RAW: {caps[kind]:x}"
        assert not caps[kind] & (1 << 21), f"{kind} has CAP_SYS_ADMIN: {caps[kind]:x}"


PING_AND_UNSHARE = (
    "import socket,struct,json,ctypes\n"
    "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM,socket.IPPROTO_ICMP);s.settimeout(5)\n"
    "s.sendto(struct.pack('!BBHHH',8,0,0,0,1)+b'cellbox',('127.0.0.1',0))\n"
    "d,a=s.recvfrom(1024)\n"
    "libc=ctypes.CDLL(None,use_errno=True)\n"
    "r=libc.unshare(0x10000000|0x40000000)\n"
    "print(json.dumps({'echo':d[0],'unshare':ctypes.get_errno() if r else 0,"
    "'seccomp':[l.split()[1] for l in open('/proc/self/status') if l.startswith('Seccomp:')][0]}))"
)


def test_clone_keeps_the_walls_and_ping(manager, loop_thread):
    """A clone is a CRIU restore into a new netns: the seccomp filter comes back with
    the processes (CRIU restores it) and the new netns gets ping_group_range from
    network/netns.py (runc restore writes no sysctls)."""
    sb = Sandboxes(manager, loop_thread)
    try:
        src = sb.create(memory_mb=256)
        copies = loop_thread.run(manager.memory.clone(src.id, 1))
        assert all(not isinstance(c, Exception) for c in copies), copies
        sb.made.extend(c.id for c in copies)
        out = run_python_json(sb, copies[0], PING_AND_UNSHARE)
        assert out == {"echo": 0, "unshare": EPERM, "seccomp": "2"}, out
    finally:
        sb.cleanup()


PTRACE_PID1 = r"""
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.restype = ctypes.c_long
out = {}
pid = os.fork()
if pid == 0:
    r = libc.ptrace(16, 1, 0, 0)                       # PTRACE_ATTACH to the agent
    e = ctypes.get_errno()
    if r == 0:
        os.waitpid(1, 0x40000000)                      # __WALL: let the stop arrive
        libc.ptrace(17, 1, 0, 0)                       # PTRACE_DETACH at once
    os._exit(0 if r == 0 else e)
out["ptrace_attach_pid1"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
buf = ctypes.create_string_buffer(16)
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
local, remote = iovec(ctypes.addressof(buf), 16), iovec(0x400000, 16)
libc.process_vm_readv.restype = ctypes.c_ssize_t
r = libc.process_vm_readv(1, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
out["process_vm_readv_pid1"] = 0 if r >= 0 else ctypes.get_errno()
try:
    open("/proc/1/mem", "rb").close()
    out["proc_1_mem"] = 0
except OSError as e:
    out["proc_1_mem"] = e.errno
print(json.dumps(out))
"""


def test_tenant_cannot_ptrace_or_read_the_agent(box):
    sb, rec = box
    out = run_python_json(sb, rec, PTRACE_PID1)
    assert out["ptrace_attach_pid1"] == EPERM, out
    assert out["process_vm_readv_pid1"] == EPERM, out
    assert out["proc_1_mem"] in (EPERM, errno.EACCES), out
