"""Named warm pools per project (Tensorlake's ``sandbox-pools``, issue 14 item 2)."""
