"""The E2B SDK's own usage examples, read from the installed package and run as written.

Sources: the README shipped in the wheel's metadata (its "Start a sandbox and run
commands" block) and the ``Example`` blocks of the sync SDK's docstrings for the
surfaces we serve (``Sandbox``, ``Sandbox.is_running``, ``SandboxPaginator``). Each
block runs unmodified except that ``x # Returns V`` comments become ``assert x == V``
(they state the result the SDK promises) and ``print`` is captured. Blocks are found
by parsing, not copied here, so a new SDK pin runs its own examples.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import re

import pytest

e2b = pytest.importorskip("e2b")
from e2b import Sandbox  # noqa: E402
from e2b.sandbox_sync.paginator import SandboxPaginator  # noqa: E402

pytestmark = pytest.mark.root
_BLOCK = re.compile(r"```(?:py|python)\n(.*?)```", re.S)
_RETURNS = re.compile(r"^(\s*)(.+?)\s*#\s*Returns\s+(True|False)\s*$", re.M)


def _blocks(text: str) -> list[str]:
    return [b for b in _BLOCK.findall(text or "") if "Sandbox" in b or "sandbox." in b]


def _readme_blocks() -> list[str]:
    readme = importlib.metadata.metadata("e2b").get_payload()  # type: ignore[attr-defined]
    section = readme.split("Start a sandbox and run commands", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    return _blocks(section)


EXAMPLES = {
    "README: start a sandbox and run commands": _readme_blocks,
    "Sandbox (class docstring)": lambda: _blocks(inspect.getdoc(Sandbox) or ""),
    "Sandbox.is_running": lambda: _blocks(inspect.getdoc(Sandbox.is_running) or ""),
    "SandboxPaginator": lambda: _blocks(inspect.getdoc(SandboxPaginator) or ""),
}


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_sdk_example_runs_as_written(name, e2b_env, request):
    request.node.add_marker(pytest.mark.e2b_calls(f"example: {name}"))
    blocks = EXAMPLES[name]()
    assert blocks, f"no example found for {name} in the installed SDK"
    printed: list[str] = []
    for block in blocks:
        code = _RETURNS.sub(lambda m: f"{m.group(1)}assert ({m.group(2)}) == {m.group(3)}", block)
        scope = {"Sandbox": Sandbox, "print": lambda *a, **k: printed.append(" ".join(map(str, a)))}
        try:
            exec(compile(code, f"<e2b example: {name}>", "exec"), scope)  # noqa: S102 - the SDK's own example
        finally:
            for value in list(scope.values()):
                if isinstance(value, Sandbox):
                    e2b_env.made.append((e2b_env.a.name, value.sandbox_id))
    if name.startswith("README"):
        assert printed == ["Hello from E2B!\n"], printed
