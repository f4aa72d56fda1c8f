"""An autoresearch loop: variants of a training script raced in parallel clones, the best kept.

A research agent holds a training setup in one sandbox (data, script, the current best
config and its model). Each round it proposes variants of the config, clones the
sandbox once per variant, trains every variant at the same time (each clone starts
from the same files and memory, so the race is fair), reads each one's validation
loss, and keeps the winning clone (its trained model included) as the next round's
starting point; the others are terminated. Pure Python: the "model" is a polynomial
fitted by mini-batch SGD, no torch. A scripted proposer stands in for the model that
would read the results and suggest the next experiments (``propose``).

    python examples/autoresearch.py [--rounds 2] [--variants 3]
"""

from __future__ import annotations

import argparse
import json
import random
from concurrent.futures import ThreadPoolExecutor

from _steps import Steps, die, sandbox_line

from cellbox import CopyError, Sandbox

DATA = r"""
import json, random
rng = random.Random(1234)
xs = [rng.uniform(-2, 2) for _ in range(600)]
rows = [[x, 0.5 * x ** 3 - x ** 2 + 2 * x + 1 + rng.gauss(0, 0.3)] for x in xs]
json.dump({"train": rows[:500], "val": rows[500:]}, open("/work/data.json", "w"))
"""
TRAIN = r"""
import json, random, sys
cfg = json.load(open(sys.argv[1]))
data = json.load(open("/work/data.json"))
deg, lr, epochs, batch = cfg["degree"], cfg["lr"], cfg["epochs"], cfg["batch"]
w = [0.0] * (deg + 1)
rng = random.Random(0)
feats = lambda x: [x ** k for k in range(deg + 1)]
train = data["train"]
for _ in range(epochs):
    rng.shuffle(train)
    for i in range(0, len(train), batch):
        grad = [0.0] * len(w)
        part = train[i:i + batch]
        for x, y in part:
            f = feats(x)
            err = sum(a * b for a, b in zip(w, f)) - y
            for k in range(len(w)):
                grad[k] += 2 * err * f[k] / len(part)
        w = [a - lr * g for a, g in zip(w, grad)]
mse = lambda rows: sum((sum(a * b for a, b in zip(w, feats(x))) - y) ** 2 for x, y in rows) / len(rows)
val = mse(data["val"])
val = val if val == val else float("inf")  # a diverged run (NaN) loses
json.dump({"cfg": cfg, "weights": w}, open("/work/model.json", "w"))
print(json.dumps({"val_mse": val, "train_mse": mse(train)}))
"""
START = {"degree": 1, "lr": 0.01, "epochs": 5, "batch": 32}


def propose(best: dict, count: int, rng: random.Random) -> list[dict]:
    """Stand-in for the research model: mutate the best config (a real one reads the log)."""
    moves = [("degree", +1), ("lr", 2.0), ("lr", 0.5), ("epochs", 2.0), ("batch", 0.5), ("degree", -1)]
    out: list[dict] = []
    for key, change in rng.sample(moves, len(moves)):
        cfg = dict(best)
        cfg[key] = max(1, cfg[key] + change) if key == "degree" else type(cfg[key])(cfg[key] * change)
        if cfg not in out and cfg != best and cfg["batch"] >= 1 and cfg["degree"] <= 5:
            out.append(cfg)
        if len(out) == count:
            break
    return out


def train(sbx: Sandbox, cfg: dict) -> float:
    sbx.write_file("/work/cfg.json", json.dumps(cfg))
    result = sbx.run("python3", ["/work/train.py", "/work/cfg.json"], timeout=120)
    if result.exit_code != 0:
        return float("inf")
    return float(json.loads(result.stdout)["val_mse"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variants", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    steps, rng = Steps(f"autoresearch: {args.rounds} rounds x {args.variants} variants"), random.Random(args.seed)
    with steps("create the research sandbox"):
        best_box = Sandbox.create(memory_mb=512, allow_internet_access=False)
    sandbox_line(best_box.id)
    live: list[Sandbox] = [best_box]
    try:
        with steps("make the data, train the baseline"):
            best_box.write_file("/work/train.py", TRAIN)
            best_box.write_file("/work/make_data.py", DATA)
            best_box.run("python3", ["/work/make_data.py"])
            best_cfg, best_loss = START, train(best_box, START)
        print(f"   baseline {best_cfg}: val mse {best_loss:.4f}")
        history = [best_loss]
        for r in range(1, args.rounds + 1):
            variants = propose(best_cfg, args.variants, rng)
            with steps(f"round {r}: clone x{len(variants)}"):
                try:
                    clones = best_box.copy(times=len(variants))
                except CopyError as exc:  # some copies failed: terminate the ones that started
                    live.extend(exc.sandboxes)
                    raise
            live.extend(clones)
            for c in clones:
                sandbox_line(c.id)
            with steps(f"round {r}: train {len(variants)} variants in parallel"):
                with ThreadPoolExecutor(len(variants)) as pool:
                    losses = list(pool.map(train, clones, variants))
            for cfg, loss in zip(variants, losses):
                print(f"   round {r}: {cfg} -> val mse {loss:.4f}")
            with steps(f"round {r}: keep the best, terminate the rest"):
                i = min(range(len(losses)), key=losses.__getitem__)
                losers = [c for j, c in enumerate(clones) if j != i or losses[i] >= best_loss]
                if losses[i] < best_loss:
                    losers.append(best_box)
                    best_box, best_cfg, best_loss = clones[i], variants[i], losses[i]
                with ThreadPoolExecutor(len(losers)) as pool:
                    list(pool.map(Sandbox.terminate, losers))
                live = [best_box]
            history.append(best_loss)
            print(f"   round {r}: best so far {best_cfg}: val mse {best_loss:.4f} (kept in {best_box.id})")
        kept = json.loads(best_box.read_file("/work/model.json"))
        print(f"best config {kept['cfg']}, weights {[round(w, 2) for w in kept['weights']]}")
        print(f"val mse by round: {[round(h, 4) for h in history]}")
        if any(b > a for a, b in zip(history, history[1:])):
            die("the kept result got worse")
    finally:
        with steps("terminate the kept sandbox"):
            for sbx in live:
                sbx.terminate()
    steps.summary()


if __name__ == "__main__":
    main()
