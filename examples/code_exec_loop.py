"""An LLM code-execution tool loop: run the code, read the error, fix it, run it again.

The loop is what an agent framework runs around a model with a "run Python" tool:

    code = policy.first_attempt(task)
    while True:
        result = sandbox.run(code)               # the tool call
        if result passes: done
        code = policy.revise(task, code, result)  # the model reads stderr and fixes

Here a scripted policy stands in for the model (no weights, no network): it knows a
buggy first attempt and the fix for each error it may read. To plug in a real model,
implement ``Policy`` with two chat calls: ``first_attempt`` sends the task, ``revise``
sends the task, the code and the sandbox's stdout/stderr, and both return the code the
model answers with (see ``ModelPolicy`` at the bottom).

    python examples/code_exec_loop.py [--max-turns 4]
"""

from __future__ import annotations

import argparse
from typing import Protocol

from _steps import Steps, die, sandbox_line

from cellbox import CommandResult, Sandbox

TASK = "Print the mean score of the students in /work/scores.csv (columns: name,score), rounded to 2 places."
DATA = "name,score\nada,91\ngrace,78\nlinus,85\nbarbara,\n"  # one missing score: the trap
EXPECTED = "84.67"


class Policy(Protocol):
    def first_attempt(self, task: str) -> str: ...
    def revise(self, task: str, code: str, result: CommandResult) -> str: ...


class ScriptedPolicy:
    """Stands in for the model: a plausible first draft, and a fix per error it recognizes."""

    FIRST = (
        "import csv\n"
        "rows = list(csv.DictReader(open('/work/scores.csv')))\n"
        "print(round(sum(int(r['score']) for r in rows) / len(rows), 2))\n"
    )
    FIXES = {
        # int('') fails on the row with no score: skip empty values
        "invalid literal for int()": (
            "import csv\n"
            "rows = list(csv.DictReader(open('/work/scores.csv')))\n"
            "scores = [int(r['score']) for r in rows if r['score'].strip()]\n"
            "print(f'{sum(scores) / len(scores):.2f}')\n"
        ),
    }

    def first_attempt(self, task: str) -> str:
        return self.FIRST

    def revise(self, task: str, code: str, result: CommandResult) -> str:
        for symptom, fixed in self.FIXES.items():
            if symptom in result.stderr:
                return fixed
        raise RuntimeError(f"the scripted policy has no fix for: {result.stderr[-200:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-turns", type=int, default=4)
    args = parser.parse_args()
    steps, policy = Steps("code-execution tool loop"), ScriptedPolicy()

    with steps("create sandbox"):
        sbx = Sandbox.create(memory_mb=512, allow_internet_access=False)  # the model's code gets no network
    sandbox_line(sbx.id)
    try:
        with steps("upload the task's data"):
            sbx.write_file("/work/scores.csv", DATA)
        with steps("policy: first attempt"):
            code = policy.first_attempt(TASK)
        for turn in range(1, args.max_turns + 1):
            with steps(f"turn {turn}: write + run the code"):
                sbx.write_file("/work/solution.py", code)
                result = sbx.run("python3", ["/work/solution.py"], timeout=30)
            print(f"   turn {turn}: exit {result.exit_code}; stdout {result.stdout!r}; "
                  f"stderr {result.stderr.strip().splitlines()[-1:]!r}")
            if result.exit_code == 0 and result.stdout.strip() == EXPECTED:
                print(f"solved in {turn} turns: {result.stdout.strip()}")
                break
            with steps(f"turn {turn}: policy reads the error and revises"):
                code = policy.revise(TASK, code, result)
        else:
            die(f"not solved in {args.max_turns} turns")
    finally:
        with steps("terminate sandbox"):
            sbx.terminate()
    steps.summary()


class ModelPolicy:
    """Where a real model plugs in (sketch; needs an LLM client, not run here)::

        def first_attempt(self, task):
            return self.chat(f"Write a Python script. Task: {task}. Answer with code only.")

        def revise(self, task, code, result):
            return self.chat(f"Task: {task}\\nYour code:\\n{code}\\nIt exited {result.exit_code}.\\n"
                             f"stdout:\\n{result.stdout}\\nstderr:\\n{result.stderr}\\nFix it; code only.")
    """


if __name__ == "__main__":
    main()
