# The two commands of the README, and the pieces they are made of.
# `make demo`: set up and run the main job. `make test`: set up and run every check.
# LIBTORCH resolved through the .libtorch link, so the value is stable across
# clones that share one venv (cargo would rebuild torch-sys otherwise).
CARGO ?= cargo
CARGO_ENV = LIBTORCH="$$(readlink -f .libtorch)"
PRETEXT_ARGS ?=

.PHONY: setup setup-broker build demo test fmt-check clippy unit bench
setup:
	ops/setup.sh

setup-broker:
	ops/setup.sh --broker

build: setup
	$(CARGO_ENV) $(CARGO) build --release -p pretext -p pretext-cli

demo: build
	$(CARGO_ENV) $(CARGO) run --release -q -p pretext -- demo $(PRETEXT_ARGS)

fmt-check:
	$(CARGO_ENV) $(CARGO) fmt --all -- --check

clippy: setup
	$(CARGO_ENV) $(CARGO) clippy --workspace --all-targets -- -D warnings

unit: setup-broker
	$(CARGO_ENV) $(CARGO) test --workspace

test: fmt-check clippy unit

bench: setup
	bench/run.sh
