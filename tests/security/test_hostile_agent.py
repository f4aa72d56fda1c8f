"""A hostile program answering where the host expects the agent, judged from the host.

The tenant owns PID 1's sandbox, so whatever answers on the agent's address may be the
tenant's own program (or a neighbour that took the address). The host must not trust
it (authentication, ``agent/auth.py``), must bound what it reads from it (heads,
bodies, SSE lines), must time out (never answering, slowloris), and must keep serving
everyone else meanwhile.

How the impostor gets there: since ``test_agent.py``'s fix the tenant can no longer
steal the agent's listening socket, and killing PID 1 ends the sandbox; so the
impostor is the tenant's server on another port of a real sandbox, and the proxy's
resolver (its injection point) sends agent traffic there with the sandbox's key, the
path a hijacked address would take. Manager calls are made with the manager's own
``AgentClient`` (every host -> agent call goes through it), pointed at that port.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from cellbox.proxy import SandboxProxy

from ..conftest import Sandboxes

pytestmark = pytest.mark.root

EVIL_PORT = 9600
# One asyncio server; what it does depends on the request path.
EVIL = r"""
import asyncio, sys
async def handle(r, w):
    try:
        head = await r.readuntil(b"\r\n\r\n")
    except Exception:
        return w.close()
    path = head.split(b" ")[1].split(b"?")[0]
    try:
        if path == b"/garbage":
            w.write(b"SSH-2.0-OpenSSH_9.2\r\n\x00\xff\xfe garbage\r\n\r\n")
        elif path == b"/forged":  # a well-formed answer, without the agent's proof
            w.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 43\r\n"
                    b"x-cellbox-auth: 00\r\n\r\n{\"processes\":[],\"healthy\":true,\"forged\":1}")
        elif path == b"/bighead":  # a header that never ends (1 GB)
            w.write(b"HTTP/1.1 200 OK\r\nx-big: ")
            chunk = b"a" * 65536
            for _ in range(16384):
                w.write(chunk)
                await w.drain()
        elif path == b"/endless":  # a body that never ends
            w.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n[")
            chunk = b"1," * 32768
            while True:
                w.write(chunk)
                await w.drain()
        elif path == b"/longline":  # one SSE line that never ends
            w.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\ndata: ")
            chunk = b"x" * 65536
            while True:
                w.write(chunk)
                await w.drain()
        elif path == b"/slowloris":  # a head, one byte per second
            for b in b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok":
                w.write(bytes([b]))
                await w.drain()
                await asyncio.sleep(1)
        else:  # /silent and anything else: never answer
            await asyncio.sleep(3600)
        await w.drain()
    except Exception:
        pass
    w.close()
async def main():
    srv = await asyncio.start_server(handle, "0.0.0.0", int(sys.argv[1]), backlog=256)
    print("ready", flush=True)
    await srv.serve_forever()
asyncio.run(main())
"""


def _key(rec: Any) -> bytes | None:
    raw = rec.extra.get("agent_key")
    return bytes.fromhex(raw) if raw else None


@pytest.fixture(scope="module")
def sandboxes_m(manager: Any, loop_thread: Any) -> Any:
    sb = Sandboxes(manager, loop_thread)
    try:
        yield sb
    finally:
        sb.cleanup()


@pytest.fixture(scope="module")
def world(sandboxes_m: Any) -> Any:
    """A sandbox running the impostor, a good sandbox, and a proxy in front of both."""
    sandboxes = sandboxes_m
    evil = sandboxes.create()
    good = sandboxes.create()
    with sandboxes.agent(evil) as agent:
        resp = agent.post("/api/v1/processes", json={"command": "python3", "args": ["-c", EVIL, str(EVIL_PORT)]})
        assert resp.status_code == 201, resp.text
        deadline = time.monotonic() + 20
        while "ready" not in " ".join(agent.get(f"/api/v1/processes/{resp.json()['pid']}/stdout").json()["lines"]):
            assert time.monotonic() < deadline, "the impostor did not start"
            time.sleep(0.1)
    targets = {
        "evil": (evil.ip, EVIL_PORT, evil.id, _key(evil)),   # as if it were the agent
        "evilplain": (evil.ip, EVIL_PORT, evil.id),                        # bounds alone (no key)
        "good": (good.ip, 9501, good.id, _key(good)),
    }

    async def resolver(ref: str, port: int) -> tuple[Any, ...]:
        return targets[ref]

    lt = sandboxes.lt
    try:
        proxy = SandboxProxy(resolver, head_timeout=3.0)
    except TypeError:  # the code before the fix has no head timeout
        proxy = SandboxProxy(resolver)
    lt.run(proxy.start("127.0.0.1", 0))
    try:
        yield {"evil": evil, "good": good, "proxy": f"http://127.0.0.1:{proxy.port}", "lt": lt}
    finally:
        lt.run(proxy.stop())


def _through_proxy(world: Any, ref: str, path: str, timeout: float = 30) -> httpx.Response:
    with httpx.Client(base_url=world["proxy"], timeout=timeout) as c:
        return c.get(path, headers={"Host": f"{ref}.local"})


def test_impostor_without_the_secret_gets_a_502_through_the_proxy(world: Any) -> None:
    resp = _through_proxy(world, "evil", "/forged")
    assert resp.status_code == 502, (resp.status_code, resp.text)
    assert resp.json()["code"] == "AGENT_NOT_AUTHENTIC"
    good = _through_proxy(world, "good", "/api/v1/health")  # the real agent passes
    assert good.status_code == 200 and "x-cellbox-auth" not in good.headers


@pytest.mark.parametrize("path", ["/garbage", "/bighead"])
def test_garbage_and_a_1gb_header_get_a_502(world: Any, path: str) -> None:
    resp = _through_proxy(world, "evilplain", path)
    assert resp.status_code == 502, (resp.status_code, resp.text[:200])


@pytest.mark.parametrize("path", ["/silent", "/slowloris"])
def test_never_answering_and_slowloris_get_a_504(world: Any, path: str) -> None:
    t0 = time.monotonic()
    resp = _through_proxy(world, "evilplain", path)
    assert resp.status_code == 504, (resp.status_code, resp.text[:200])
    assert time.monotonic() - t0 < 20


def test_manager_calls_refuse_what_the_impostor_answers(world: Any) -> None:
    from cellbox.manager import agent_client

    client = agent_client.AgentClient()
    evil, lt = world["evil"], world["lt"]
    key = _key(evil)

    async def attempt(path: str, key_: bytes | None) -> str:
        try:
            await client.get_json(evil.ip, EVIL_PORT, key_, path, timeout=3, max_bytes=1 << 20)
        except agent_client.AgentError as exc:
            return exc.code
        return "accepted"

    async def sse(path: str) -> str:
        try:
            async for _ in client.sse_data(evil.ip, EVIL_PORT, None, path, json_body={}, timeout=3):
                pass
        except agent_client.AgentError as exc:
            return exc.code
        return "accepted"

    async def all_of() -> dict[str, str]:
        names = ["forged", "garbage", "bighead", "endless", "silent", "slowloris"]
        results = await asyncio.gather(
            attempt("/forged", key), *[attempt(f"/{n}", None) for n in names[1:]], sse("/longline"))
        return dict(zip([*names, "longline"], results))

    t0 = time.monotonic()
    got = lt.run(all_of())
    assert got == {
        "forged": "AGENT_NOT_AUTHENTIC",
        "garbage": "AGENT_UNREACHABLE",
        "bighead": "AGENT_UNREACHABLE",
        "endless": "AGENT_RESPONSE_TOO_LARGE",
        "silent": "AGENT_TIMEOUT",
        "slowloris": "AGENT_TIMEOUT",
        "longline": "AGENT_RESPONSE_TOO_LARGE",
    }, got
    assert time.monotonic() - t0 < 20
    lt.run(client.close())


def test_server_keeps_serving_others_during_the_attack(world: Any) -> None:
    """Every attack at once through the proxy; a GET on the good sandbox meanwhile."""
    import threading

    stop = threading.Event()

    def attack(path: str) -> None:
        while not stop.is_set():
            try:
                with httpx.Client(base_url=world["proxy"], timeout=10) as c:
                    if path == "/endless":
                        with c.stream("GET", path, headers={"Host": "evilplain.local"}) as r:
                            for i, _ in enumerate(r.iter_raw()):
                                if i > 200 or stop.is_set():
                                    break
                    else:
                        c.get(path, headers={"Host": "evilplain.local"})
            except httpx.HTTPError:
                pass

    threads = [threading.Thread(target=attack, args=(p,), daemon=True)
               for p in ["/garbage", "/bighead", "/endless", "/silent", "/slowloris", "/silent", "/bighead"]]
    for t in threads:
        t.start()
    try:
        time.sleep(1)
        worst = 0.0
        with httpx.Client(base_url=world["proxy"], timeout=10) as c:
            for _ in range(20):
                t0 = time.monotonic()
                assert c.get("/api/v1/health", headers={"Host": "good.local"}).status_code == 200
                worst = max(worst, time.monotonic() - t0)
                time.sleep(0.1)
        print(f"\nworst GET on another sandbox during the attack: {worst * 1000:.1f} ms")
        assert worst < 5.0  # not a timing assertion: a blocked loop would be seconds to forever
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=15)
