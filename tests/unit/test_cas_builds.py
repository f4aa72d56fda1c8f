"""The build registry of Tensorlake's Image Service view (api/cas_builds.py): its bounds
against a hostile tenant, without a server."""

from __future__ import annotations

import time

import pytest

from cellbox.api.cas_builds import MAX_OPEN, UPLOAD_TTL, Build, BuildInProgress, BuildNotFound, Builds
from cellbox.errors import LimitExceeded


def _build(n: int, project: str = "a", name: str | None = None, key: str | None = None) -> Build:
    return Build(build_id=f"build_{n}", project=project, name=name or f"img{n}", kind="dockerfile",
                 idempotency_key=key)


def test_same_idempotency_key_answers_the_same_build() -> None:
    builds = Builds()
    first = builds.admit(_build(1, key="k"))
    assert builds.admit(_build(2, key="k")) is first
    assert builds.admit(_build(3, project="b", key="k")) is not first  # keys are per project


def test_a_name_with_an_open_build_is_a_conflict_naming_it() -> None:
    builds = Builds()
    builds.admit(_build(1, name="x"))
    with pytest.raises(BuildInProgress) as err:
        builds.admit(_build(2, name="x"))
    assert err.value.to_dict()["active_build_id"] == "build_1"
    builds.get("build_1", "a").set(status="failed")
    builds.admit(_build(3, name="x"))  # finished: a new build may start


def test_open_builds_per_project_are_capped_and_expire() -> None:
    builds = Builds()
    for n in range(MAX_OPEN):
        builds.admit(_build(n))
    with pytest.raises(LimitExceeded):
        builds.admit(_build(99))
    builds.admit(_build(100, project="b"))  # another project is not affected
    for n in range(MAX_OPEN):
        builds.get(f"build_{n}", "a").created = time.time() - UPLOAD_TTL - 1
    builds.admit(_build(101))  # the stale ones went away


def test_other_projects_and_wrong_tokens_see_nothing() -> None:
    builds = Builds()
    b = builds.admit(_build(1))
    with pytest.raises(BuildNotFound):
        builds.get("build_1", "b")
    with pytest.raises(BuildNotFound):
        builds.by_token("build_1", b.token[:-1] + ("A" if b.token[-1] != "A" else "B"))
    with pytest.raises(BuildNotFound):
        builds.by_token("build_2", b.token)
    assert builds.by_token("build_1", b.token) is b
