"""Every ``cellbox`` verb takes ``--json`` (issue 14), except the short, justified list in
``cli/main.py``'s ``NO_JSON``: walked from ``VERBS`` and every group's subcommands, so a
new verb without ``--json`` fails here. No server: this reads the command tree."""

from __future__ import annotations

from collections.abc import Iterator

import click

from cellbox.cli.main import NO_JSON, VERBS, cli


def _leaves(cmd: click.Command, path: str) -> Iterator[tuple[str, click.Command]]:
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            yield from _leaves(sub, f"{path} {name}")
        if not cmd.invoke_without_command:
            return  # a bare group only prints help
    yield path, cmd


def _verbs() -> dict[str, click.Command]:
    out: dict[str, click.Command] = {}
    for command, names in VERBS:
        out.update(_leaves(command, names[0]))
    return out


def _has_json(cmd: click.Command) -> bool:
    return any("--json" in p.opts for p in cmd.params)


def test_every_verb_has_json_or_a_reason():
    verbs = _verbs()
    missing = sorted(path for path, cmd in verbs.items() if not _has_json(cmd) and path not in NO_JSON)
    assert missing == [], f"verbs without --json (add it, or a reason to NO_JSON): {missing}"


def test_the_exception_list_is_short_and_true():
    verbs = _verbs()
    assert len(NO_JSON) <= 8
    for path, why in NO_JSON.items():
        assert path in verbs, f"NO_JSON names {path!r}, which is not a verb"
        assert not _has_json(verbs[path]), f"{path} has --json now: drop it from NO_JSON"
        assert len(why) > 15


def test_the_walk_sees_groups_and_aliases():
    verbs = _verbs()
    for path in ("pty ls", "pty rm", "restart", "kill", "exec", "snapshot create", "snapshot rm", "fs attach", "node drain"):
        assert path in verbs
    assert cli.commands["stop"] is cli.commands["terminate"]  # aliases are the same command
