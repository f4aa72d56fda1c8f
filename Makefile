# The two commands a newcomer needs (see README.md):
#   make run    set up this host if needed, then start the server in the foreground
#   make test   set up this host (with test tools) if needed, then run the whole suite
.PHONY: run test test-cluster lint setup setup-test bench compat-e2b compat-tensorlake envd-stubs

setup:
	bash scripts/setup.sh

setup-test:
	bash scripts/setup.sh --test

run: setup
	.venv/bin/cellbox server

# After the suite (passed or not) the pool is unmounted again, so a test run leaves no
# mount or loop device behind; pytest's exit code is kept (.ci/run reads it).
test: setup-test lint
	.venv/bin/python -m pytest -q tests; rc=$$?; .venv/bin/cellbox setup --release || true; exit $$rc

# Static checks (config in pyproject.toml), run before the suite: seconds, no root.
lint:
	.venv/bin/ruff check src tests bench scripts
	.venv/bin/mypy

# The cluster's tests (tests/cluster/): a real PostgreSQL, S3 (moto) and two nodes in
# network namespaces; about 4-5 minutes. `make test` runs them too (testpaths).
test-cluster: setup-test
	.venv/bin/python -m pytest -q tests/cluster

bench: setup-test
	.venv/bin/pip install -q -e ".[test,bench]"
	.venv/bin/python bench/start.py
	.venv/bin/python bench/tti.py
	.venv/bin/python bench/state.py
	.venv/bin/python bench/storage.py
	.venv/bin/python bench/images.py
	.venv/bin/python bench/network.py
	.venv/bin/python bench/ui.py
	.venv/bin/python bench/e2b.py

# The E2B compatibility suite; writes docs/compat-e2b.md (call -> status) from its results.
compat-e2b: setup-test
	E2B_COMPAT_TABLE=docs/compat-e2b.md .venv/bin/python -m pytest -q tests/compat/test_e2b_sdk.py \
		tests/compat/test_e2b_examples.py tests/compat/test_e2b_tls.py \
		tests/compat/test_e2b_code_interpreter.py

# The tensorlake compatibility suite; writes docs/compat-tensorlake.md (every public method of
# the installed SDK -> served / refused / not covered, as observed in the run: tests/compat/tl_table.py).
compat-tensorlake: setup-test
	TENSORLAKE_COMPAT_TABLE=docs/compat-tensorlake.md .venv/bin/python -m pytest -q tests/compat/test_tensorlake_*.py

# envd's protos from the pinned e2b SDK's descriptors, then our stubs from them (cellbox/e2b/gen/).
envd-stubs: setup-test
	.venv/bin/python scripts/e2b_protos.py
	bash scripts/gen_envd.sh
