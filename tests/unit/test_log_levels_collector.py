"""Log levels and the collector's parsing of an agent's journal answer (untrusted: the
tenant's PID 1 writes it), and the keeper's per-entry cap; no server needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cellbox.logs.collector import MAX_BODY, parse
from cellbox.logs.keeper import LogKeeper
from cellbox.manager.agent_client import AgentError
from cellbox.manager.log_levels import DEBUG, ERROR, FATAL, INFO, WARN, level_of
from cellbox.manager.logs import LogLine


@pytest.mark.parametrize(("line", "stream", "level"), [
    ("plain", "stdout", INFO), ("plain", "stderr", ERROR), ("plain", None, INFO),
    ("WARNING:root:disk low", "stderr", WARN), ("INFO:uvicorn:started", "stderr", INFO),
    ("[debug] tick", "stdout", DEBUG), ("<err> x", "stdout", ERROR), ("panic: oops", "stderr", FATAL),
    ('{"level":"warn","msg":"x"}', "stdout", WARN), ("time=1 level=error msg=x", None, ERROR),
    ("errors: 0", "stdout", INFO), ("information", "stderr", ERROR), ("x" * 200 + " ERROR", "stdout", INFO),
])
def test_levels(line, stream, level):
    assert level_of(line, stream) == level


def test_parse_takes_only_well_formed_entries():
    doc = {"entries": [
        {"s": 5, "p": 10, "c": "sh", "o": "stderr", "t": 1, "l": "boom"},
        {"s": 6, "p": True, "o": "stdout", "t": 1, "l": "bool pid"},       # not an int
        {"s": 4, "p": 10, "o": "stdout", "t": 1, "l": "before the cursor"},  # replayed: dropped
        {"s": 7, "p": 10, "o": "weird", "t": 1, "l": "x" * (MAX_BODY + 10), "c": ["not", "a", "str"]},
        "not an object", {"s": 8},
    ], "next": 9, "first": 5}
    lines, seqs, nxt = parse(doc, 5)
    assert seqs == [5, 7] and nxt == 9
    assert (lines[0].body, lines[0].level, lines[0].command) == ("boom", ERROR, "sh")
    assert len(lines[1].body) == MAX_BODY and lines[1].command is None and lines[1].level == INFO
    for bad in ({"entries": "x", "next": 1}, {"entries": [], "next": "1"}, [], {"entries": [], "next": -1}):
        with pytest.raises(AgentError):
            parse(bad, 0)


def test_parse_reports_a_gap():
    lines, seqs, _ = parse({"entries": [{"s": 50, "p": 1, "o": "stdout", "t": 1, "l": "x"}], "next": 51,
                            "first": 50}, 10)
    assert "40 lines were dropped" in lines[0].body and lines[0].level == WARN and seqs == [49, 50]


def test_keeper_cuts_a_huge_entry_and_remembers_the_cursor(tmp_path: Path):
    keeper = LogKeeper(tmp_path, max_bytes=4096)
    sid = "k" * 21
    keeper.append(sid, [LogLine(1, "\u2603" * 5000, 1, "c", ERROR), LogLine(2, "small", 1, "c")], [3, 4])
    raws = (tmp_path / sid / "current.jsonl").read_text().splitlines()
    assert all(len(r) <= 4096 // 8 for r in raws) and json.loads(raws[0])["b"].endswith("[cut by cellbox]")
    assert keeper.last_seq(sid) == 4
    assert [ln.level for ln in keeper.read(sid)] == [ERROR, INFO]
    assert keeper.last_seq("z" * 21) is None
    with pytest.raises(ValueError):
        keeper.append("../etc", [LogLine(1, "x", 1, "c")])
