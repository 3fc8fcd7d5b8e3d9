# The two commands of the README, and a few conveniences. Everything is a script in scripts/.
.PHONY: demo test test-fast lint opensearch-start opensearch-stop bench

demo:            ## sample transcripts → local OpenSearch → the verdict of a recipient
	scripts/demo

test:            ## the whole test suite (what CI runs)
	scripts/test

test-fast:       ## unit and golden tests only, no OpenSearch
	scripts/test -m "not integration"

lint:            ## ruff and mypy --strict (also the first step of `make test`)
	scripts/bootstrap && .venv/bin/ruff check shipper tests bench && .venv/bin/mypy

opensearch-start:
	deploy/opensearch-local/start

opensearch-stop:
	deploy/opensearch-local/stop
