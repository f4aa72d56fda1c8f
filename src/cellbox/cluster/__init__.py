"""Cluster mode: many hosts on one PostgreSQL.

One durable relational store (``store.py``, schema in ``migrations/``), a pull-based
agent per host (``node.py``: today's single-host manager plus a loop that claims
commands), a stateless control plane (``control.py``: writes desired state and a
command, waits for the node), placement (``placement.py``) and snapshot artifacts in
S3-compatible storage (``artifacts.py``). PostgreSQL is the cluster's truth; each
node's SQLite stays its local cache of what runs there.
"""
