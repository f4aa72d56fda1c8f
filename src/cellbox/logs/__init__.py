"""Sandbox logs kept on the host and Tensorlake's log filters (issue 14 item 4)."""
