"""Reproducible RL environments: restore one memory snapshot N times, get identical episodes.

The environment below boots *non-deterministically* on purpose: its world and its
random generator are seeded from the OS (as real simulators, games and services often
are, by time, PIDs or hash seeds). Two fresh boots give two different worlds. But a
memory snapshot freezes one booted environment, processes and RAM included, and every
sandbox restored from it starts from that exact state: with the same policy seed, the
episodes are identical, step for step. The example shows both: each restore's state
hash and episode equal the others', and a fresh boot's differ.

    python examples/reproducible_env.py [--restores 3] [--steps 40] [--policy-seed 7]
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor

from _steps import Steps, die, sandbox_line

from cellbox import Sandbox, SandboxClient

# A stochastic gridworld: walls and "slip" noise from a generator seeded by the OS.
ENV = r"""
import hashlib, json, os, random, time
rng = random.Random()                      # seeded from os.urandom: every boot differs
SIZE = 8
walls = {(rng.randrange(SIZE), rng.randrange(SIZE)) for _ in range(10)} - {(0, 0)}
for _ in range(rng.randrange(1000)):       # the env "warms up": state lives only in RAM
    rng.random()
def state_hash():
    return hashlib.sha256(repr((rng.getstate(), sorted(walls))).encode()).hexdigest()[:16]
open("/tmp/ready", "w").write(state_hash())
while not os.path.exists("/tmp/go"):       # the snapshot is taken while we wait here
    time.sleep(0.01)
policy_seed, steps = map(int, open("/tmp/go").read().split())
start = state_hash()
policy = random.Random(policy_seed)
pos, ret, trajectory = (0, 0), 0.0, []
moves = {"N": (0, -1), "S": (0, 1), "E": (1, 0), "W": (-1, 0)}
for t in range(steps):
    action = policy.choice("NSEW")
    if rng.random() < 0.25:                # the environment's own randomness
        action = rng.choice("NSEW")
    dx, dy = moves[action]
    nxt = (min(max(pos[0] + dx, 0), SIZE - 1), min(max(pos[1] + dy, 0), SIZE - 1))
    reward = -1.0 if nxt in walls else (10.0 if nxt == (SIZE - 1, SIZE - 1) else -0.1)
    pos = pos if nxt in walls else nxt
    ret += reward
    trajectory.append([action, list(pos), reward])
out = {"start_state": start, "return": round(ret, 3), "trajectory": trajectory}
open("/tmp/episode.json", "w").write(json.dumps(out))
"""


def wait_for_file(sbx: Sandbox, path: str, timeout: float = 30.0) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return sbx.read_file(path)
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def boot_env(sbx: Sandbox) -> str:
    """Start the environment in ``sbx``; return its state hash once it is ready."""
    sbx.write_file("/work/env.py", ENV)
    sbx.start_process("python3", ["/work/env.py"])
    return wait_for_file(sbx, "/tmp/ready").decode()


def episode(sbx: Sandbox, policy_seed: int, steps: int) -> dict:
    sbx.write_file("/tmp/go", f"{policy_seed} {steps}")
    return json.loads(wait_for_file(sbx, "/tmp/episode.json"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--restores", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--policy-seed", type=int, default=7)
    args = parser.parse_args()
    steps, client = Steps(f"{args.restores} restores of one memory snapshot"), SandboxClient()
    made: list[Sandbox] = []
    snapshot_id = None
    try:
        with steps("boot the environment"):
            base = Sandbox.create(memory_mb=512, allow_internet_access=False)
            made.append(base)
            sandbox_line(base.id)
            booted = boot_env(base)
        with steps("memory snapshot of the booted environment"):
            snapshot_id = base.snapshot("memory").id
        with steps(f"restore it x{args.restores}"):
            with ThreadPoolExecutor(args.restores) as pool:
                futures = [pool.submit(Sandbox.create, snapshot_id=snapshot_id) for _ in range(args.restores)]
            restored = [f.result() for f in futures if f.exception() is None]
            made.extend(restored)  # the ones that started are cleaned up even if another failed
            for f in futures:
                if f.exception() is not None:
                    raise f.exception()  # type: ignore[misc]
        for sbx in restored:
            sandbox_line(sbx.id)
        with steps(f"run {args.restores} episodes (policy seed {args.policy_seed})"):
            with ThreadPoolExecutor(args.restores) as pool:
                episodes = list(pool.map(lambda s: episode(s, args.policy_seed, args.steps), restored))
        with steps("control: a fresh boot of the same environment"):
            fresh = Sandbox.create(memory_mb=512, allow_internet_access=False)
            made.append(fresh)
            sandbox_line(fresh.id)
            boot_env(fresh)
            control = episode(fresh, args.policy_seed, args.steps)
        print(f"   snapshot taken at state {booted}")
        for sbx, ep in zip(restored, episodes):
            print(f"   restore {sbx.id}: start state {ep['start_state']}, return {ep['return']:7.2f}, "
                  f"{len(ep['trajectory'])} steps")
        print(f"   fresh boot {fresh.id}: start state {control['start_state']}, return {control['return']:7.2f}")
        identical = all(ep == episodes[0] for ep in episodes)
        print(f"identical episodes across restores: {identical}")
        print(f"fresh boot differs: {control['start_state'] != episodes[0]['start_state']}")
        if not identical or episodes[0]["start_state"] != booted:
            die("restores of one snapshot diverged (or did not start from the snapshot's state)")
    finally:
        with steps("terminate sandboxes, delete the snapshot"):
            with ThreadPoolExecutor(max(len(made), 1)) as pool:
                list(pool.map(Sandbox.terminate, made))
            if snapshot_id:
                client.delete_snapshot(snapshot_id)
            client.close()
    steps.summary()


if __name__ == "__main__":
    main()
