"""Our own little internet for network tests: hosts in network namespaces we create.

Tests never send traffic anywhere but loopback and these namespaces.
"""
