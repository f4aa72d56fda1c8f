"""An agent swarm: many sandboxes at once, each with its own sub-task, results gathered.

A coordinator splits a job (here: count the primes below N, and find the largest
prime gap, over disjoint ranges) into one sub-task per worker; each worker agent gets a
sandbox of its own, writes its program, runs it, and reports back. The coordinator
gathers the answers as they come in and checks the combined result. Written with the
async SDK (``AsyncSandbox``): one event loop drives all the sandboxes, no threads. In a
real swarm each worker's program would come from its own model call (see
``worker_program``).

    python examples/agent_swarm.py [--workers 4] [--limit 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from _steps import Steps, die, sandbox_line

from cellbox import AsyncSandbox

PROGRAM = """
import json, sys
lo, hi = int(sys.argv[1]), int(sys.argv[2])
def is_prime(n):
    if n < 2: return False
    if n % 2 == 0: return n == 2
    f = 3
    while f * f <= n:
        if n % f == 0: return False
        f += 2
    return True
primes = [n for n in range(lo, hi) if is_prime(n)]
gaps = [b - a for a, b in zip(primes, primes[1:])]
print(json.dumps({"lo": lo, "hi": hi, "count": len(primes), "first": primes[:1], "last": primes[-1:],
                  "max_gap": max(gaps, default=0)}))
"""


def worker_program(task: dict) -> str:
    """What the worker's model would write for its task; fixed code here."""
    return PROGRAM


async def worker(index: int, lo: int, hi: int, steps: Steps) -> dict:
    start = time.perf_counter()
    sbx = await AsyncSandbox.create(memory_mb=256, allow_internet_access=False)
    sandbox_line(sbx.id)
    try:
        await sbx.write_file("/work/task.py", worker_program({"lo": lo, "hi": hi}))
        result = await sbx.run("python3", ["/work/task.py", str(lo), str(hi)], timeout=120)
        if result.exit_code != 0:
            raise RuntimeError(f"worker {index} failed: {result.stderr[-300:]}")
        answer = json.loads(result.stdout)
    finally:
        await sbx.terminate()
        await sbx.close()
    steps.done.append((f"worker {index}: [{lo}, {hi})", time.perf_counter() - start))
    print(f"   worker {index} done in {time.perf_counter() - start:.2f} s: {answer['count']} primes", flush=True)
    return answer


def reference(limit: int) -> int:
    sieve = bytearray([1]) * limit
    sieve[:2] = b"\x00\x00"
    for i in range(2, int(limit ** 0.5) + 1):
        if sieve[i]:
            sieve[i * i::i] = bytearray(len(range(i * i, limit, i)))
    return sum(sieve)


async def swarm(workers: int, limit: int, steps: Steps) -> None:
    bounds = [limit * i // workers for i in range(workers + 1)]
    with steps(f"{workers} workers in parallel (create, write, run, terminate)"):
        answers = await asyncio.gather(*(worker(i, bounds[i], bounds[i + 1], steps) for i in range(workers)))
    with steps("gather and combine"):
        total = sum(a["count"] for a in answers)
        # the largest gap may straddle two ranges: join each range's last prime to the next one's first
        gaps = [a["max_gap"] for a in answers]
        gaps += [b["first"][0] - a["last"][0] for a, b in zip(answers, answers[1:]) if a["last"] and b["first"]]
    with steps("check against a local sieve"):
        want = reference(limit)
    print(f"primes below {limit}: {total} (local sieve: {want}); largest gap {max(gaps)}")
    if total != want:
        die("the swarm's answer is wrong")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--limit", type=int, default=200_000)
    args = parser.parse_args()
    steps = Steps(f"swarm of {args.workers} sandboxes")
    asyncio.run(swarm(args.workers, args.limit, steps))
    steps.summary()


if __name__ == "__main__":
    main()
