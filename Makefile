# dirac-rs: `make run` starts the embedded installation, `make test` runs
# every check CI runs. A persistent target directory outside the checkout
# keeps rebuilds fast.
CARGO_TARGET_DIR ?= $(HOME)/.cache/dirac-rs/target
export CARGO_TARGET_DIR
NEXTEST := $(shell cargo nextest --version >/dev/null 2>&1 && echo "cargo nextest run" || echo "cargo test")

.PHONY: all build run test lint test-tools bench bench-jdl clean-data

all: build

build:
	cargo build --workspace --bins

## Start `diracd all`, submit the examples, show their states; Ctrl-C stops it.
run: build
	scripts/run-embedded.sh

## Formatting, clippy and the whole test suite (SQLite, MariaDB, PostgreSQL).
test: test-tools lint build
	$(NEXTEST) --workspace

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

## Python tools the end-to-end tests use (grpcio with reflection).
test-tools:
	scripts/test-tools.sh

## Submission throughput against a running installation (see docs/benchmarks.md).
bench:
	cargo build --release -p diracd -p dirac-bench
	scripts/bench-submit.sh

bench-jdl:
	cargo bench -p dirac-jdl --bench parse

clean-data:
	rm -rf .dirac
