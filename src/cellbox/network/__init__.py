"""Network: the host bridge, one netns + veth per sandbox, our nftables table, DNS.

Layout: every sandbox has its own network namespace ``cb-<id>`` whose ``eth0`` is a
veth whose host end hangs off the bridge ``cellbox0`` (gateway = first address of the
subnet). Bridge ports are *isolated* (``bridge link set ... isolated on``), so
sandboxes cannot talk to each other even at layer 2. Everything else is one nftables
table of our own (``inet cellbox``) that matches only the bridge and the subnet:
NAT for outbound traffic, no access to the host's own services or to link-local
metadata addresses. The host's other tables, policies and routes are never touched.
``walls.py`` adds what must hold against a tenant that controls its netns entirely:
per-port source checks in table ``bridge cellbox``, pinned neighbour/FDB entries,
private ranges denied by default, and per-sandbox bounds on conntrack and resolver
connections.
"""
