# The two commands of the README, and the pieces they are made of.
# `make demo`: set up and run the main job. `make test`: set up and run every check.
# LIBTORCH resolved through the .libtorch link, so the value is stable across
# clones that share one venv (cargo would rebuild torch-sys otherwise).
CARGO ?= cargo
CARGO_ENV = LIBTORCH="$$(readlink -f .libtorch)"
PRETEXT_ARGS ?=

.PHONY: setup setup-broker build demo test fmt-check clippy unit bench compose-test data-bacteria data-music
setup:
	ops/setup.sh

setup-broker:
	ops/setup.sh --broker

build: setup
	$(CARGO_ENV) $(CARGO) build --release -p pretext -p pretext-producer

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

# The deployment (docker-compose.yml) built and run on a local engine, with
# faults (ops/local/compose-test.sh); images built without a registry.
compose-test: build
	ops/local/compose-test.sh

# The two real development datasets (docs/datasets/): bacterial genomes from
# Debian's ragout-examples, fiddle tunes from music21's corpus.
data-bacteria: build
	$(CARGO_ENV) $(CARGO) run --release -q -p pretext -- import-genomes \
	  --source "$$(ops/get-genomes.sh)" --out data/bacteria --max-len 4096 --max-windows-per-species 250

data-music: setup
	.venv/bin/python python/import_music.py --out data/music
