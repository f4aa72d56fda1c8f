"""``cellbox exec`` with supervision flags, ``restart``, ``kill`` by name and ``pty
ls|attach|rm``, as subprocesses against a live server (issue 14); hostile inputs:
names that match nothing or were reused, another sandbox's PTY session, wrong tokens."""

from __future__ import annotations

import json
import time

import pytest

from cellbox.sdk import Sandbox

pytestmark = pytest.mark.root


def _ps(cli, sid: str, ref: str) -> dict:
    return json.loads(cli("ps", sid, ref, "--json").stdout)


def _until(check, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_managed_process_restarts_and_is_reached_by_name(cli, sandbox_id):
    sid = sandbox_id
    pid = int(cli("exec", "--name", "flaky", "--restart", "always", "--max-restarts", "10",
                  "--initial-backoff-ms", "50", "--max-backoff-ms", "100",
                  sid, "sh", "-c", "echo up; sleep 0.3; exit 3").stdout)
    info = _ps(cli, sid, "flaky")
    assert info["managed"]["name"] == "flaky" and info["managed"]["restart"]["policy"] == "always"
    assert info["managed"]["restart"]["max_restarts"] == 10
    _until(lambda: _ps(cli, sid, "flaky")["managed"]["restart_count"] >= 1, what="an automatic restart")
    assert _ps(cli, sid, "flaky")["managed"]["last_exit"]["exit_code"] == 3

    restarted = json.loads(cli("restart", sid, "flaky", "--json").stdout)
    assert restarted["managed"]["name"] == "flaky" and restarted["pid"] != pid
    assert int(cli("restart", sid, str(restarted["pid"])).stdout) != restarted["pid"]  # by PID too

    assert json.loads(cli("kill", sid, "flaky", "--json").stdout)["process"] == "flaky"
    stopped = _until(lambda: (i := _ps(cli, sid, "flaky"))["managed"]["status"] == "stopped" and i,
                     what="supervision to stop")
    time.sleep(0.5)  # no restart comes after a kill
    assert _ps(cli, sid, "flaky")["managed"]["restart_count"] == stopped["managed"]["restart_count"]
    assert "flaky" in cli("ps", sid).stdout


def test_kill_by_name_hostile_cases(cli, sandbox_id):
    sid = sandbox_id
    nothing = cli("kill", sid, "no-such-name", check=False)
    assert nothing.returncode == 1 and "not found" in nothing.stderr
    slash = cli("kill", sid, "../files", check=False)
    assert slash.returncode == 2 and "PROCESS" in slash.stderr
    # a name used twice (the first stopped, so the name was free again): the live one is the target
    first = int(cli("exec", "--name", "web", sid, "sleep", "600").stdout)
    taken = cli("exec", "--name", "web", sid, "sleep", "600", check=False)
    assert taken.returncode == 1 and "already named" in taken.stderr
    cli("kill", sid, "web")
    second = int(cli("exec", "--name", "web", sid, "sleep", "601").stdout)
    cli("kill", sid, "web")
    procs = {p["pid"]: p for p in json.loads(cli("ps", sid, "--json").stdout)}
    _until(lambda: all(not p["status"] == "running" for p in json.loads(cli("ps", sid, "--json").stdout)
                       if p["pid"] in (first, second)), what="both to end")
    assert first in procs and second in procs
    # restarting a process that is not managed is refused, naming why
    plain = cli("exec", "--detach", sid, "sleep", "600").stdout.strip()
    refused = cli("restart", sid, plain, check=False)
    assert refused.returncode == 1 and "not a managed process" in refused.stderr
    cli("kill", sid, plain)


def test_health_check_flags(cli, sandbox_id):
    sid = sandbox_id
    # nothing listens on 9: failing probes make it unhealthy; with --restart never it keeps running
    cli("exec", "--name", "probe", "--restart", "never", "--health-tcp", "9", "--health-initial-delay-ms", "0",
        "--health-interval-ms", "50", "--health-retries", "2", sid, "sleep", "600")
    info = _until(lambda: (i := _ps(cli, sid, "probe"))["managed"]["health_status"] == "unhealthy" and i,
                  what="unhealthy")
    assert info["status"] == "running" and info["managed"]["health_check"]["failure_threshold"] == 2
    # with a restart policy an unhealthy process is restarted
    cli("exec", "--name", "probe2", "--health-http", "9:/healthz", "--health-initial-delay-ms", "0",
        "--health-interval-ms", "50", "--health-failure-threshold", "1", "--initial-backoff-ms", "0",
        "--json", sid, "sleep", "600")
    check = _ps(cli, sid, "probe2")["managed"]["health_check"]
    assert check["type"] == "http" and check["path"] == "/healthz" and check["port"] == 9
    _until(lambda: _ps(cli, sid, "probe2")["managed"]["restart_count"] >= 1, what="a health restart")
    cli("kill", sid, "probe2")
    cli("kill", sid, "probe")

    before = len(json.loads(cli("ps", sid, "--json").stdout))
    for bad, word in ((["--health-interval-ms", "100"], "--health-http or --health-tcp"),
                      (["--health-http", "http://x"], "--health-http"),
                      (["--health-http", "80", "--health-tcp", "81"], "exclude"),
                      (["--name", "123"], "--name"),
                      (["--initial-backoff-ms", "500", "--max-backoff-ms", "10"], "--max-backoff-ms"),
                      (["--restart", "sometimes"], "--restart")):
        out = cli("exec", *bad, sid, "sleep", "1", check=False)
        assert out.returncode == 2 and word in out.stderr, (bad, out.stderr)
    assert len(json.loads(cli("ps", sid, "--json").stdout)) == before  # nothing was started


def test_exec_and_run_json(cli, sandbox_id):
    out = cli("exec", "--json", sandbox_id, "sh", "-c", "echo out; echo err >&2; exit 4", check=False)
    assert out.returncode == 4
    result = json.loads(out.stdout)
    assert result["stdout"] == "out" and result["stderr"] == "err" and result["exit_code"] == 4
    detached = json.loads(cli("exec", "--detach", "--json", sandbox_id, "sleep", "5").stdout)
    assert detached["status"] == "running" and detached["pid"] > 1


def test_pty_verbs(cli, live_server):
    a, b = cli.new(), cli.new()
    with Sandbox.connect(a, api_url=live_server.api_url) as sbx:
        term = sbx.pty("/bin/sh")
        session, token = term.session_id, term.token
        term.close()  # detach: the session lives on
    sessions = json.loads(cli("pty", "ls", a, "--json").stdout)
    assert [s["session_id"] for s in sessions] == [session] and sessions[0]["is_alive"]
    assert "token" not in sessions[0]
    assert session in cli("pty", "ls", a).stdout
    assert json.loads(cli("pty", "ls", b, "--json").stdout) == []

    other = cli("pty", "rm", b, session, check=False)  # another sandbox's session: not found there
    assert other.returncode == 1 and "not found" in other.stderr
    wrong = cli("pty", "attach", a, session, "--token", "not-the-token", check=False)
    assert wrong.returncode == 1 and "token" in wrong.stderr
    cross = cli("pty", "attach", b, session, "--token", token, check=False)
    assert cross.returncode == 1 and "not found" in cross.stderr

    attached = cli("pty", "attach", a, session, "--token", token, input="echo attached-$((6*7))\nexit 7\n",
                   timeout=60, check=False)
    assert attached.returncode == 7 and "attached-42" in attached.stdout
    with Sandbox.connect(a, api_url=live_server.api_url) as sbx:
        second = sbx.pty("/bin/sh").session_id
    removed = json.loads(cli("pty", "rm", a, second, "--json").stdout)
    assert removed == [{"id": second, "ok": True}]
    assert second not in [s["session_id"] for s in json.loads(cli("pty", "ls", a, "--json").stdout)]
