# Thin wrappers over scripts/: the scripts are the source of truth (CI runs .ci/run -> scripts/test.sh).
.PHONY: setup test lint demo simulate

setup:
	bash scripts/setup.sh

test:
	bash scripts/test.sh

lint:
	bash scripts/test.sh --lint-only

demo: setup
	.venv/bin/elsa demo

simulate: setup
	.venv/bin/elsa simulate --config configs/default.yaml
