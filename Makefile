# `make run` starts one node on https://127.0.0.1:8006; `make test` runs lint and the whole suite.
# Every target bootstraps first (scripts/bootstrap.sh: missing Debian packages, .venv).
PYTHON := .venv/bin/python
RUFF := .venv/bin/ruff
PYTEST := .venv/bin/pytest
LINT_IMPORTS := .venv/bin/lint-imports --no-logo --no-cache
# mypy ([tool.mypy] in pyproject.toml). Its Django plugin imports portal.settings, which reads the
# environment and would create <PVE_DATA_DIR>/secret_key: a throwaway data directory and key instead.
MYPY = tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && PVE_DATA_DIR="$$tmp" PVE_SECRET_KEY=mypy .venv/bin/mypy

.PHONY: bootstrap run test lint bench bench-cluster clean

bootstrap:
	@./scripts/bootstrap.sh

run: bootstrap
	$(PYTHON) manage.py runnode

# lint-imports: the import contracts in pyproject.toml (layers, no harness in production, no cycles);
# mypy: the types (replicator and authz strict).
lint: bootstrap
	$(RUFF) check .
	$(RUFF) format --check .
	$(LINT_IMPORTS)
	$(MYPY)

# One recipe, in order (also under make -j). Any non-zero pytest exit fails the target,
# including 5 ("no tests collected"): an empty run is never a pass. The second pass runs the
# postgres_too tests (API, access control, tasks, replicator, 3-node replication) on PostgreSQL.
test: bootstrap
	$(RUFF) check .
	$(RUFF) format --check .
	$(LINT_IMPORTS)
	$(MYPY)
	$(PYTEST) -q
	PVE_TEST_DATABASE=postgresql $(PYTEST) -q -m postgres_too

bench: bootstrap
	$(PYTHON) bench/replicated_writes.py

bench-cluster: bootstrap
	$(PYTHON) bench/cluster_writes.py --nodes 3
	$(PYTHON) bench/cluster_writes.py --nodes 5

clean:
	rm -rf data .pytest_cache .ruff_cache .mypy_cache
	find . -path ./.venv -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
