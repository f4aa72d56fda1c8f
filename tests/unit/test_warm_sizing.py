"""The warm pool's sizing policy (manager/warm_sizing.py), on a fake clock, without root."""

from __future__ import annotations

import pytest

from cellbox.manager.warm_sizing import SizingPolicy, WarmSizer


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def sizer(**kw) -> tuple[WarmSizer, Clock]:
    clock = Clock()
    policy = SizingPolicy(**{"floor": 2, "budget_mb": 3200, "per_sandbox_mb": 32, **kw})
    return WarmSizer(policy, clock), clock


def burst(s: WarmSizer, clock: Clock, n: int, spacing: float = 0.01) -> None:
    for _ in range(n):
        s.observe()
        clock.t += spacing


def test_no_demand_keeps_the_floor():
    s, _ = sizer()
    assert s.target() == 2


def test_a_burst_grows_the_pool_to_the_burst_with_headroom():
    s, clock = sizer()
    burst(s, clock, 50)
    assert s.target() == 60  # 50 x 1.2


def test_the_memory_budget_caps_the_pool():
    s, clock = sizer(budget_mb=1600)  # 50 sandboxes of 32 MiB
    burst(s, clock, 100)
    assert s.target() == 50


def test_a_cap_bounds_a_named_image_pool_below_the_budget():
    s, clock = sizer(cap=16)
    burst(s, clock, 100)
    assert s.target() == 16


def test_the_floor_wins_over_a_tiny_budget():
    s, clock = sizer(floor=4, budget_mb=32)
    assert s.target() == 4
    burst(s, clock, 30)
    assert s.target() == 4


def test_the_pool_remembers_a_burst_then_shrinks_when_idle():
    s, clock = sizer(memory_s=600, budget_mb=6400)
    burst(s, clock, 100)
    clock.t += 45  # the second burst of the bench comes 45 s later: still sized for it
    assert s.target() == 120
    clock.t += 600
    assert s.target() == 2


def test_a_later_smaller_burst_does_not_shrink_the_pool_before_the_big_one_expires():
    s, clock = sizer(memory_s=600)
    burst(s, clock, 80)
    clock.t += 300
    burst(s, clock, 10)
    assert s.target() == 96  # 80 x 1.2
    clock.t += 301  # the big burst has expired, the small one not yet
    assert s.target() == 12


def test_slow_sequential_creates_do_not_count_as_a_burst():
    s, clock = sizer(burst_s=10)
    burst(s, clock, 30, spacing=5.0)  # one create every 5 s: two per window at most
    assert s.target() == 3  # ceil(2 x 1.2)


@pytest.mark.parametrize("var,value,field,expect", [
    ("CELLBOX_WARM_BUDGET_MB", "640", "budget_mb", 640),
    ("CELLBOX_WARM_SANDBOX_MB", "16", "per_sandbox_mb", 16),
    ("CELLBOX_WARM_MEMORY_S", "30", "memory_s", 30.0),
])
def test_policy_from_the_environment(monkeypatch, var, value, field, expect):
    monkeypatch.setenv(var, value)
    assert getattr(SizingPolicy.from_env(floor=3), field) == expect


def test_default_budget_is_a_quarter_of_host_memory():
    from cellbox.manager.warm_sizing import host_memory_mb

    assert SizingPolicy(floor=0, per_sandbox_mb=1).ceiling() == host_memory_mb() // 4
