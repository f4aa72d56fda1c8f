"""The front door: API keys, projects, quotas, secrets and the audit log (issue 12).

``keys`` is the key format and hashing (no I/O), ``store`` the tables beside the
sandbox records, ``guard`` turns an ``Authorization`` header into a ``Principal``,
``quotas`` checks a project's limits atomically and ``vault`` encrypts secrets.
"""
