"""``python -m cellbox.agent --port 9501 [--host 0.0.0.0] [--root /]``."""

from .main import main

main()
