"""The program ``interp_app.py`` runs in the sandbox: ``interp_kernel.py`` then
``interp_client.py``, as one text for ``python3 -S -c``. Read as files, never imported
by the host."""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).parent
SOURCE = "\n".join((_HERE / name).read_text(encoding="utf-8") for name in ("interp_kernel.py", "interp_client.py"))
