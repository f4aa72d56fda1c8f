"""Manager: the sandbox state machine. Composes runtime, storage and network.

The API and the proxy call the manager; the manager calls the subsystems, which
never import each other or the manager.
"""
