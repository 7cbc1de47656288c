# The checks a change must pass before it is committed (CI runs the same, with the full test run).
.PHONY: check test-all

check:
	.venv/bin/ruff check salesbot_poller tests benchmarks
	.venv/bin/ruff format --check salesbot_poller tests benchmarks
	.venv/bin/mypy
	.venv/bin/python -m pytest -q

# Every test, slow tier included: what .ci/run runs.
test-all:
	.venv/bin/python -m pytest -q -m ""
