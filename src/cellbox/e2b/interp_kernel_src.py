"""The text of ``interp_kernel.py``: it runs in the sandbox as ``python3 -c SOURCE``,
so it is read as a file, never imported by the host."""

from __future__ import annotations

from pathlib import Path

SOURCE = Path(__file__).with_name("interp_kernel.py").read_text(encoding="utf-8")
