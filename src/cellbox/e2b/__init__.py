"""E2B's wire, as a second view of the same sandboxes (issue 17).

* ``rest.py``: E2B's control-plane REST API (``/e2b/...`` on the lifecycle app; the
  SDK's ``E2B_API_URL`` points there), mapped onto ``SandboxService``.
* ``envd_app.py``: envd's protocol (Connect RPC ``process.Process`` and
  ``filesystem.Filesystem``, plus its HTTP ``/files`` and ``/health``), served on a
  loopback port of its own; the proxy sends port 49983 of a sandbox there
  (``proxy_hook.py``) and the app translates each call onto the sandbox's own agent.
  Nothing new runs inside the sandbox.
* ``gen/``: stubs generated from ``proto/envd`` (scripts/gen_envd.sh). DO NOT EDIT.
"""
