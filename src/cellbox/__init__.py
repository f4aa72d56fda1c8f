"""cellbox: self-hosted sandboxes for AI agents.

Kept import-light on purpose: the in-sandbox agent lives in ``cellbox.agent`` and is
copied into every sandbox on its own, and the CLI should start fast.
"""

__version__ = "0.1.0"
