"""Placement: filter the nodes that can take a sandbox, then rank best-of-K.

Best-of-K (the power of K random choices) instead of scoring every node: with
several stateless control-plane replicas placing at once, each sees the same
slightly stale load; always picking *the* least-loaded node would send every
replica's creates to the same one. Sampling K and taking the best of those spreads
them and still keeps load even (Mitzenmacher). Locality first: a node that already
holds the snapshot (memory restore without a download) or the image wins the
sample before load is compared.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..errors import LimitExceeded, NotFound
from .records import NodeRow

K = 2
# What a memory snapshot's CRIU images depend on: restoring on a node that differs
# in any of these can fail or, worse, crash the restored program later (CPU flags).
MEMORY_KEYS = ("kernel", "cpu", "criu")


@dataclass(frozen=True)
class Want:
    memory_mb: int
    image: str | None = None
    # For a resume from a memory snapshot: the fingerprint it was dumped on.
    fingerprint: dict[str, str] | None = None
    # Nodes that already cache the snapshot's artifacts.
    cached_on: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


def why_not(node: NodeRow, want: Want) -> str | None:
    """The reason this node cannot take it, or None (the filter, one reason per node)."""
    if not node.alive or node.state != "alive":
        return "not alive"
    if node.id in want.exclude:
        return "excluded"
    if node.sandboxes >= node.capacity_sandboxes:
        return "full (sandboxes)"
    if node.mem_mb + want.memory_mb > node.capacity_mem_mb:
        return "full (memory)"
    if want.image and want.image not in node.images:
        # Pulling images across nodes is not in this slice: a node must hold it.
        return f"no image {want.image}"
    if want.fingerprint is not None:
        for key in MEMORY_KEYS:
            if node.fingerprint.get(key) != want.fingerprint.get(key):
                return f"{key} differs from the snapshot's"
    return None


def _rank(node: NodeRow, want: Want) -> tuple[int, float]:
    """Lower is better: locality first, then the fuller of the two load ratios."""
    local = 0 if node.id in want.cached_on else 1
    load = max(node.sandboxes / max(node.capacity_sandboxes, 1), node.mem_mb / max(node.capacity_mem_mb, 1))
    return (local, load)


def place(nodes: list[NodeRow], want: Want, *, k: int = K, rng: random.Random | None = None) -> NodeRow:
    """One node for ``want``; ``LimitExceeded`` naming why each node was refused."""
    fits = [n for n in nodes if why_not(n, want) is None]
    if not fits:
        why = {n.id: why_not(n, want) for n in nodes}
        alive = [r for r in why.values() if r != "not alive"]
        if alive and all(r and r.startswith("no image") for r in alive):
            raise NotFound(f"image {want.image!r} is on no node of the cluster", code="IMAGE_NOT_FOUND")
        reasons = "; ".join(f"{k}: {r}" for k, r in why.items()) or "no nodes registered"
        raise LimitExceeded(f"no node can take this sandbox ({reasons})", code="NO_NODE")
    local = [n for n in fits if n.id in want.cached_on]
    if local:  # a node holding the snapshot always beats a download
        fits = local
    sample = (rng or random).sample(fits, min(k, len(fits)))
    return min(sample, key=lambda n: _rank(n, want))
