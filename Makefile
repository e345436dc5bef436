# The two commands of README.md: `make run` starts one node, `make test` runs the whole suite.
PYTHON := .venv/bin/python

.PHONY: bootstrap run test test-sqlite test-postgres lint bench clean

bootstrap:
	@./scripts/bootstrap.sh

run: bootstrap
	$(PYTHON) manage.py runnode

lint: bootstrap
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

# pytest exits 5 when it collects nothing: that is a failure here, never a pass.
test: bootstrap lint test-sqlite test-postgres

test-sqlite:
	.venv/bin/pytest -q

test-postgres:
	PVE_TEST_DATABASE=postgresql .venv/bin/pytest -q -m postgres_too

bench: bootstrap
	$(PYTHON) bench/replicated_writes.py

clean:
	rm -rf data .pytest_cache .ruff_cache
