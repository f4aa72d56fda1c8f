"""Parallel RL rollouts: a warm sandbox, ``clone ×G`` as a reward oracle, GSPO-style scoring.

A policy proposes a *group* of G candidate programs for one prompt; each is scored by
running the task's tests, each in its own clone of one warm sandbox (the tests, the
grader and a warmed-up interpreter are already in it, so a clone starts with all of
that in memory, and a candidate that wrecks its machine wrecks only its copy). The
rewards become group-relative advantages, as in GRPO/GSPO:

    A_i = (r_i - mean(r)) / (std(r) + eps)

and GSPO's sequence-level importance ratio ``s_i = (pi(y_i|x) / pi_old(y_i|x)) ** (1/|y_i|)``
(clipped) weighs each candidate's whole sequence. Here a scripted sampler stands in for
the model, with made-up log-probabilities; a real trainer plugs in at ``sample_group``
(generate G completions with their token log-probs) and ``update`` (the GSPO loss).

    python examples/rl_rollouts.py [--group 4] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from _steps import Steps, die, sandbox_line

from cellbox import CopyError, Sandbox

PROMPT = "Write is_palindrome(s): True if s reads the same backwards, ignoring case and non-letters."
TESTS = [("Racecar", True), ("A man, a plan, a canal: Panama!", True), ("hello", False), ("", True),
         ("ab", False), ("No 'x' in Nixon", True)]
GRADER = f"""
import json, sys, importlib.util
spec = importlib.util.spec_from_file_location("cand", "/work/candidate.py")
passed = 0
try:
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    for arg, want in {TESTS!r}:
        try:
            passed += mod.is_palindrome(arg) == want
        except Exception:
            pass
except Exception as exc:
    print(json.dumps({{"passed": 0, "total": {len(TESTS)}, "error": type(exc).__name__}})); sys.exit(0)
print(json.dumps({{"passed": passed, "total": {len(TESTS)}}}))
"""
CANDIDATES = [  # (label, code): what a model might sample for PROMPT
    ("correct", "def is_palindrome(s):\n    t = [c.lower() for c in s if c.isalpha()]\n    return t == t[::-1]\n"),
    ("ignores case+punct", "def is_palindrome(s):\n    return s == s[::-1]\n"),
    ("ignores punct", "def is_palindrome(s):\n    s = s.lower()\n    return s == s[::-1]\n"),
    ("syntax error", "def is_palindrome(s)\n    return True\n"),
    ("always True (hack)", "def is_palindrome(s):\n    return True\n"),
    ("correct (regex)",
     "import re\ndef is_palindrome(s):\n    t = re.sub('[^a-z]', '', s.lower())\n    return t == t[::-1]\n"),
]


@dataclass
class Rollout:
    label: str
    code: str
    logp_new: float  # sum of token log-probs under the current policy (scripted here)
    logp_old: float  # ... and under the policy that sampled it
    tokens: int
    reward: float = 0.0
    advantage: float = 0.0


def sample_group(rng: random.Random, size: int) -> list[Rollout]:
    """Stand-in for the model: G completions (with log-probs) for PROMPT."""
    out = []
    for _ in range(size):
        label, code = rng.choice(CANDIDATES)
        tokens = len(code.split())
        logp_old = -tokens * rng.uniform(0.2, 0.6)
        out.append(Rollout(label, code, logp_old + rng.uniform(-0.3, 0.3), logp_old, tokens))
    return out


def score(clone: Sandbox, rollout: Rollout) -> float:
    """The reward oracle: the fraction of tests the candidate passes, in its own clone."""
    clone.write_file("/work/candidate.py", rollout.code)
    result = clone.run("python3", ["/work/grader.py"], timeout=30)
    verdict = json.loads(result.stdout)
    return verdict["passed"] / verdict["total"]


def gspo_terms(group: list[Rollout], clip: float = 0.2) -> list[float]:
    """Group-relative advantages, and GSPO's clipped, length-normalized sequence ratios."""
    rewards = [r.reward for r in group]
    mean, std = statistics.fmean(rewards), statistics.pstdev(rewards)
    ratios = []
    for r in group:
        r.advantage = (r.reward - mean) / (std + 1e-6)
        ratio = math.exp((r.logp_new - r.logp_old) / r.tokens)
        ratios.append(min(max(ratio, 1 - clip), 1 + clip))
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", type=int, default=4, help="candidates per group (G)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    steps, rng = Steps(f"GSPO-style group of {args.group}, scored in clones"), random.Random(args.seed)

    with steps("create the warm sandbox"):
        base = Sandbox.create(memory_mb=512, allow_internet_access=False)
    sandbox_line(base.id)
    clones: list[Sandbox] = []
    try:
        with steps("install the tests and warm the grader"):
            base.write_file("/work/grader.py", GRADER)
            base.write_file("/work/candidate.py", CANDIDATES[0][1])
            assert base.run("python3", ["/work/grader.py"]).exit_code == 0  # imports now cached in memory
        with steps("policy samples a group"):
            group = sample_group(rng, args.group)
        with steps(f"clone the warm sandbox x{args.group}"):
            try:
                clones = base.copy(times=args.group)
            except CopyError as exc:  # some copies failed: the ones that started are ours to end
                clones = list(exc.sandboxes)
                raise
        for c in clones:
            sandbox_line(c.id)
        with steps(f"score {args.group} candidates in parallel"):
            with ThreadPoolExecutor(args.group) as pool:
                rewards = list(pool.map(score, clones, group))
        for r, reward in zip(group, rewards):
            r.reward = reward
        with steps("group-relative advantages (GSPO)"):
            ratios = gspo_terms(group)
        print("   #  reward  advantage  seq-ratio  candidate")
        for i, (r, ratio) in enumerate(zip(group, ratios)):
            print(f"   {i}  {r.reward:6.2f}  {r.advantage:9.2f}  {ratio:9.3f}  {r.label}")
        expected = {"correct": 1.0, "correct (regex)": 1.0, "syntax error": 0.0, "always True (hack)": 4 / 6}
        if any(r.label in expected and abs(r.reward - expected[r.label]) > 1e-9 for r in group):
            die("the reward oracle scored a known candidate wrongly")
        # update(policy, group, ratios): a real trainer takes the GSPO loss
        #   -mean_i(min(s_i * A_i, clip(s_i) * A_i)) and steps the optimizer here.
    finally:
        with steps("terminate clones and the warm sandbox"):
            with ThreadPoolExecutor(len(clones) + 1) as pool:
                list(pool.map(Sandbox.terminate, [*clones, base]))
    steps.summary()


if __name__ == "__main__":
    main()
