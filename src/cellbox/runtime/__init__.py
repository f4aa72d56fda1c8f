"""Runtime: OCI bundles and runc, the agent's read-only tree, cgroup facts.

runc, not crun: Debian 12's crun 1.8.1 is built without CRIU (``crun --version``
shows no ``+CRIU``) and refuses this host's hybrid cgroup layout, while runc calls
the ``criu`` binary for checkpoint/restore. Measurements in docs/ARCHITECTURE.md.
"""
