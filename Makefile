.PHONY: run test bench lint

# Set up everything (virtualenv, Redis, sample images, admin account) and start the platform.
run:
	bash scripts/setup.sh run
	bash scripts/run.sh

# The same set-up plus the test packages and Chromium, then the whole suite.
test:
	bash scripts/setup.sh test
	.venv/bin/python -m pytest

# Throughput of the platform against plain baselines measured in the same run.
bench:
	bash scripts/setup.sh test
	.venv/bin/python -m bench

# Style, and the layers' import contracts (pyproject.toml).
lint:
	bash scripts/setup.sh test
	.venv/bin/ruff format --check .
	.venv/bin/ruff check .
	.venv/bin/lint-imports
