"""Placement: the filter's reasons, locality before load, best-of-K spreading."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from cellbox.cluster.placement import Want, place, why_not
from cellbox.cluster.records import NodeRow
from cellbox.errors import LimitExceeded, NotFound

FP = {"kernel": "6.18", "cpu": "abc", "criu": "4.2.1"}


def node(i: str, *, n: int = 0, mem: int = 0, alive: bool = True, fp: dict | None = None,
         images: tuple[str, ...] = ("img",)) -> NodeRow:
    return NodeRow(i, f"{i}:9443", 10, 4096, {}, fp or FP, images, "alive", 1, alive, n, mem)


def test_filter_names_each_reason() -> None:
    assert why_not(node("a", alive=False), Want(256)) == "not alive"
    assert why_not(node("a", n=10), Want(256)) == "full (sandboxes)"
    assert why_not(node("a", mem=4000), Want(256)) == "full (memory)"
    assert why_not(node("a"), Want(256, image="other")) == "no image other"
    assert why_not(node("a", fp={**FP, "cpu": "xyz"}), Want(256, fingerprint=FP)) == "cpu differs from the snapshot's"
    assert why_not(node("a", fp={**FP, "criu": "4.1"}), Want(256, fingerprint=FP)) == "criu differs from the snapshot's"
    assert why_not(node("a"), Want(256, image="img", fingerprint=FP)) is None
    with pytest.raises(LimitExceeded, match="a: full .*b: not alive"):
        place([node("a", n=10), node("b", alive=False)], Want(256))
    with pytest.raises(NotFound, match="on no node"):  # an image nobody has is a 404, not "full"
        place([node("a"), node("b", alive=False)], Want(256, image="nope"))
    with pytest.raises(LimitExceeded, match="no nodes registered"):
        place([], Want(256))


def test_the_node_holding_the_snapshot_wins_over_an_emptier_one() -> None:
    nodes = [node("busy", n=8), node("idle", n=0), node("idle2", n=0)]
    for seed in range(20):
        assert place(nodes, Want(256, cached_on=("busy",)), rng=random.Random(seed)).id == "busy"


def test_best_of_k_prefers_the_emptier_and_still_spreads() -> None:
    nodes = [node("a", n=1), node("b", n=5)]
    assert all(place(nodes, Want(256), rng=random.Random(s)).id == "a" for s in range(20))  # K=2 sees both
    many = [node(f"n{i}") for i in range(10)]  # equal load: picks spread, never one node for all
    picks = Counter(place(many, Want(256), rng=random.Random(s)).id for s in range(200))
    assert len(picks) >= 8
