"""e2b-code-interpreter (the pinned wheel) against cellbox, unmodified.

Its README example runs as written (parsed from the installed package's metadata);
then each surface it offers: ``run_code`` results / ``text`` / logs / ``error`` with
traceback, state kept between calls, contexts (create with a cwd, isolated, list,
restart, remove), ``env_vars``, subprocess output, rich results. Hostile: the kernel
program in the sandbox is the tenant's; a ``python3`` replaced by the tenant that
answers garbage gets a clear error, never a 500, and the server stays healthy.
"""

from __future__ import annotations

import importlib.metadata
import re

import pytest

pytest.importorskip("e2b_code_interpreter")
from e2b import SandboxException  # noqa: E402
from e2b_code_interpreter import Sandbox  # noqa: E402

pytestmark = pytest.mark.root
calls = pytest.mark.e2b_calls
_BLOCK = re.compile(r"```(?:py|python)\n(.*?)```", re.S)


@pytest.fixture
def sbx(e2b_env):
    return e2b_env.track(Sandbox.create(timeout=300))


def _readme_example() -> str:
    readme = importlib.metadata.metadata("e2b-code-interpreter").get_payload()  # type: ignore[attr-defined]
    section = readme.split("Execute code with code interpreter inside Sandbox", 1)[1].split("\n### ", 1)[0]
    blocks = _BLOCK.findall(section)
    assert blocks, "the README's example is not where it was"
    return blocks[0]


@calls("code_interpreter: README example", "code_interpreter: Sandbox.create", "code_interpreter: run_code")
def test_readme_example_runs_as_written(e2b_env):
    printed: list[str] = []
    scope = {"print": lambda *a, **k: printed.append(" ".join(map(str, a)))}
    try:
        exec(compile(_readme_example(), "<code-interpreter README>", "exec"), scope)  # noqa: S102 - the SDK's own example
    finally:
        for value in list(scope.values()):
            if isinstance(value, Sandbox):
                e2b_env.made.append((e2b_env.a.name, value.sandbox_id))
    assert printed == ["2"], printed  # "print(execution.text)  # outputs 2"


@calls("code_interpreter: run_code", "code_interpreter: Execution.text", "code_interpreter: Execution.logs",
       "code_interpreter: Execution.results", "code_interpreter: on_stdout/on_stderr/on_result")
def test_state_results_and_logs(sbx):
    assert sbx.run_code("import sys\nx = 41").text is None
    seen: list[str] = []
    ex = sbx.run_code("print('out'); print('err', file=sys.stderr)\nx + 1",
                      on_stdout=lambda m: seen.append(f"stdout:{m.line}"), on_stderr=lambda m: seen.append(f"stderr:{m.line}"),
                      on_result=lambda r: seen.append(f"result:{r.text}"))
    assert ex.text == "42" and ex.error is None
    assert ex.logs.stdout == ["out\n"] and ex.logs.stderr == ["err\n"]
    assert seen == ["stdout:out\n", "stderr:err\n", "result:42"]
    assert [r.is_main_result for r in ex.results] == [True]
    assert ex.execution_count == 2
    ex = sbx.run_code("import subprocess; subprocess.run(['echo', 'from a child'])\nNone")
    assert ex.logs.stdout == ["from a child\n"] and ex.results == []


@calls("code_interpreter: Execution.error")
def test_error_has_name_value_and_traceback(sbx):
    ex = sbx.run_code("def f():\n    raise ValueError('boom')\nf()")
    assert ex.error.name == "ValueError" and ex.error.value == "boom"
    assert "raise ValueError('boom')" in ex.error.traceback and "line 2, in f" in ex.error.traceback
    assert "interp_kernel" not in ex.error.traceback  # the kernel's own frames are cut
    assert sbx.run_code("1 +").error.name == "SyntaxError"
    assert sbx.run_code("'still alive'").text == "'still alive'"  # an error leaves the kernel up


@calls("code_interpreter: run_code(envs=)", "code_interpreter: Result (html)")
def test_env_vars_and_rich_results(sbx):
    ex = sbx.run_code("import os; os.environ.get('CELL_VAR')", envs={"CELL_VAR": "set"})
    assert ex.text == "'set'"
    assert sbx.run_code("repr(os.environ.get('CELL_VAR'))").text == "'None'"  # per execution only
    ex = sbx.run_code("class H:\n    def _repr_html_(self): return '<b>hi</b>'\n    def __repr__(self): return 'H'\nH()")
    assert ex.results[0].html == "<b>hi</b>" and ex.results[0].text == "H" and "html" in ex.results[0].formats()


@calls("code_interpreter: create_code_context", "code_interpreter: run_code(context=)",
       "code_interpreter: list_code_contexts", "code_interpreter: restart_code_context",
       "code_interpreter: remove_code_context")
def test_contexts(sbx):
    sbx.run_code("shared = 'default'")
    ctx = sbx.create_code_context(cwd="/tmp")
    assert ctx.language == "python" and ctx.cwd == "/tmp"
    assert sbx.run_code("import os; os.getcwd()", context=ctx).text == "'/tmp'"
    assert sbx.run_code("shared", context=ctx).error.name == "NameError"  # contexts are isolated
    sbx.run_code("mine = 7", context=ctx)
    assert sbx.run_code("mine", context=ctx).text == "7"
    assert ctx.id in {c.id for c in sbx.list_code_contexts()}
    sbx.restart_code_context(ctx)
    assert sbx.run_code("mine", context=ctx).error.name == "NameError"  # restarted: state gone
    sbx.remove_code_context(ctx.id)
    assert ctx.id not in {c.id for c in sbx.list_code_contexts()}
    assert sbx.run_code("shared").text == "'default'"
    with pytest.raises(Exception, match="not found"):
        sbx.run_code("1", context=ctx)
    with pytest.raises(SandboxException, match="not a directory"):
        sbx.create_code_context(cwd="/no/such/dir")


@pytest.mark.e2b_unsupported("code_interpreter: run_code(language='javascript')",
                             "code_interpreter: create_code_context(language='r')")
def test_other_languages_are_refused_clearly(sbx):
    with pytest.raises(SandboxException, match="language 'javascript' is not supported.*python only"):
        sbx.run_code("1", language="javascript")
    with pytest.raises(SandboxException, match="language 'r' is not supported"):
        sbx.create_code_context(language="r")


def test_tokens_are_required(e2b_env, sbx):
    import httpx

    url = f"{e2b_env.sandbox_url}/execute"
    base = {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "49999"}
    resp = httpx.post(url, json={"code": "1"}, headers=base, timeout=30)
    assert resp.status_code == 401 and resp.json()["code"] == "INVALID_ACCESS_TOKEN", resp.text
    # A wrong traffic token is not the interpreter's: the proxy's own check refuses it.
    resp = httpx.post(url, json={"code": "1"}, headers={**base, "E2B-Traffic-Access-Token": "wrong"}, timeout=30)
    assert resp.status_code == 401, resp.text
    resp = httpx.post(url, json={"code": "1"}, headers={**base, "X-Access-Token": "wrong"}, timeout=30)
    assert resp.status_code == 401 and resp.json()["code"] == "INVALID_ACCESS_TOKEN", resp.text
    resp = httpx.post(url, content=b"{not json", headers={**base, "E2B-Traffic-Access-Token": sbx.traffic_access_token},
                      timeout=30)
    assert resp.status_code == 400 and resp.json()["code"] == "INVALID_JSON"
    resp = httpx.post(url, json={"code": 5}, headers={**base, "X-Access-Token": sbx._envd_access_token}, timeout=30)
    assert resp.status_code == 400 and "code" in resp.json()["error"]


_FAKE = {
    # Before the kernel accepts, or mid-stream: the execution's error says what broke.
    "garbage first": ("echo 'hello, i am not a kernel'", "not a frame"),
    "nothing at all": ("exit 3", "sent nothing"),
    "stderr only": ("echo 'Traceback: I broke' >&2; exit 1", "I broke"),
    "malformed JSON": ("echo '={\"type\": \"cbx_accepted\"}'; echo '={nope'", "malformed JSON"),
    "wrong types": ("echo '={\"type\": \"cbx_accepted\"}'; echo '={\"type\": \"error\", \"name\": 5}'",
                    "without a string 'name'"),
    "unknown type": ("echo '={\"type\": \"cbx_accepted\"}'; echo '={\"type\": \"rm -rf\"}'", "unknown frame type"),
    "oversized frame": ("echo '={\"type\": \"cbx_accepted\"}'; "
                        "/usr/bin/python3 -c \"import sys; [sys.stdout.write('+' + 'a' * 60000 + '\\n') for _ in range(300)]\"",
                        "frame over"),
    "ends early": ("echo '={\"type\": \"cbx_accepted\"}'", "ended without finishing"),
}


@calls("code_interpreter: hostile kernel output")
def test_a_hostile_kernel_gets_clear_errors(sbx):
    """The tenant puts its own ``python3`` first on PATH: whatever it prints is checked."""
    path = sbx.commands.run("echo $PATH").stdout.strip().split(":")
    assert path.index("/usr/local/bin") < path.index("/usr/bin"), path
    for name, (script, message) in _FAKE.items():
        sbx.files.write("/usr/local/bin/python3", f"#!/bin/sh\n{script}\n")
        sbx.commands.run("chmod +x /usr/local/bin/python3")
        ex = sbx.run_code("1")
        assert ex.error is not None and ex.error.name == "CellboxKernelError", (name, ex)
        assert message in ex.error.value, (name, ex.error.value)
    # A flood of frames where a short answer is due: a clear error, bounded on the host.
    sbx.files.write("/usr/local/bin/python3", "#!/bin/sh\nyes '={\"type\": \"cbx_ok\"}'\n")
    with pytest.raises(SandboxException, match="over 1000 frames"):
        sbx.list_code_contexts()
    sbx.commands.run("rm /usr/local/bin/python3")
    assert sbx.run_code("6 * 7").text == "42"  # the real kernel, still fine


@calls("code_interpreter: state across Sandbox.pause / connect")
def test_kernel_state_survives_pause_and_resume(sbx):
    """The kernel is a process in the sandbox: CRIU's memory state brings it back whole."""
    sbx.run_code("import random\nrandom.seed(7)\nkept = [random.random() for _ in range(3)]")
    assert sbx.pause() is True
    back = Sandbox.connect(sbx.sandbox_id)
    assert back.run_code("len(kept), random.random() < 1").text == "(3, True)"
