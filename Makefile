# The two commands a newcomer needs (see README.md):
#   make run    set up this host if needed, then start the server in the foreground
#   make test   set up this host (with test tools) if needed, then run the whole suite
.PHONY: run test test-cluster lint setup setup-test bench

setup:
	bash scripts/setup.sh

setup-test:
	bash scripts/setup.sh --test

run: setup
	.venv/bin/cellbox server

test: setup-test lint
	.venv/bin/python -m pytest -q tests

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
