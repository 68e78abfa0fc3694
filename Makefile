# dirac-rs: `make run` starts the embedded installation, `make test` runs
# every check CI runs. A persistent target directory outside the checkout
# keeps rebuilds fast.
CARGO_TARGET_DIR ?= $(HOME)/.cache/dirac-rs/target
export CARGO_TARGET_DIR
NEXTEST := $(shell cargo nextest --version >/dev/null 2>&1 && echo "cargo nextest run" || echo "cargo test")

.PHONY: all build run test lint test-tools bench bench-jdl bench-matcher bench-match bench-e2e bench-auth bench-catalog clean-data

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

bench-auth:
	cargo bench -p dirac-core --bench verify -- --warm-up-time 1 --measurement-time 3

bench-matcher:
	cargo bench -p dirac-matcher --bench matching -- --warm-up-time 1 --measurement-time 2

## Matcher service with 500 concurrent fake pilots (see docs/benchmarks.md).
bench-match:
	cargo build --release -p diracd -p dirac-bench
	scripts/bench-match.sh

## The file catalog: registration, lookup, listings, metadata queries (see docs/benchmarks.md).
bench-catalog:
	cargo build --release -p diracd -p dirac-bench
	scripts/bench-catalog.sh

## 1000 /bin/true jobs through local pilots, submission to all Done.
bench-e2e:
	cargo build --release -p diracd -p dirac-bench -p dirac-pilot
	scripts/bench-e2e.sh

clean-data:
	rm -rf .dirac
