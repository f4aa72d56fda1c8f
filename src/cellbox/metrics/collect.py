"""What ``/metrics`` reports.

Two kinds, on a registry of our own (not the library's global one, so tests and two
servers in one process do not share series):

* event series fed by ``cellbox.observe`` hooks: create/restore/resume/clone latency
  histograms, proxy requests and errors;
* state read at scrape time (a custom collector), so it is never stale and costs
  nothing between scrapes: sandboxes by state and project, warm pool sizes, and each
  project's use (running sandboxes, vCPUs, memory, disk held).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .. import observe

# Seconds: creates are ~0.03 s (warm) to seconds (cold on a loaded host); clones longer.
BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class StateCollector(Collector):
    def __init__(self, service: Any, door: Any) -> None:
        self.service, self.door = service, door

    def collect(self) -> Iterator[GaugeMetricFamily]:
        db = self.service.store.db
        by_state = GaugeMetricFamily("cellbox_sandboxes", "Sandboxes by state and project (live records)",
                                     labels=["state", "project"])
        rows = db.execute("SELECT status, namespace, COUNT(*) FROM sandboxes "
                          "WHERE status NOT IN ('terminated','failed') GROUP BY status, namespace").fetchall()
        for status, project, n in rows:
            by_state.add_metric([status, project], n)
        yield by_state
        warm = GaugeMetricFamily("cellbox_warm_pool_ready", "Pre-booted sandboxes ready, by image", labels=["image"])
        target = GaugeMetricFamily("cellbox_warm_pool_size", "Warm pool size asked for, by image", labels=["image"])
        manager = self.service.manager
        if manager.warm is not None:
            warm.add_metric(["default"], manager.warm.ready)
            target.add_metric(["default"], manager.warm.size)
        for name, pool in manager.image_manager.pools.items():
            warm.add_metric([name], pool.ready)
            target.add_metric([name], pool.size)
        yield warm
        yield target
        use = GaugeMetricFamily("cellbox_project_usage", "A project's use of each quota'd resource",
                                labels=["project", "resource"])
        projects = {p for (_, p, _) in rows}  # projects with live sandboxes (every key's project would be thousands in tests)
        for project in sorted(projects):
            for resource, value in self.door.store.usage(project).items():
                use.add_metric([project, resource], value)
        yield use


class Metrics:
    def __init__(self, service: Any, door: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.latency = Histogram("cellbox_operation_seconds", "Latency of sandbox operations",
                                 ["operation", "outcome"], buckets=BUCKETS, registry=self.registry)
        self.proxy_requests = Counter("cellbox_proxy_requests", "Requests the sandbox proxy received",
                                      registry=self.registry)
        self.proxy_errors = Counter("cellbox_proxy_errors", "Requests the proxy answered with an error itself",
                                    ["status"], registry=self.registry)
        self.registry.register(StateCollector(service, door))
        observe.on_timing(self._timing)
        observe.on_count(self._count)

    def _timing(self, operation: str, seconds: float, ok: bool) -> None:
        self.latency.labels(operation, "ok" if ok else "error").observe(seconds)

    def _count(self, event: str, label: str) -> None:
        if event == "proxy_request":
            self.proxy_requests.inc()
        elif event == "proxy_error":
            self.proxy_errors.labels(label or "unknown").inc()
