# The commands people type. `make demo` and `make test` are the two that matter.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help tools demo-tools demo test lint unit infra-check build bench emulator clean-demo

help:
	@echo "make demo      run the main job end to end on local emulators and print the run report"
	@echo "make test      install the pinned tools (once), then fmt, clippy and every test"
	@echo "make build     release arm64 Lambda zips (cargo lambda) into target/lambda/<function>/"
	@echo "make bench     measure throughput, speed, memory, state and start-up; writes bench/out/results.json"
	@echo "make emulator  run the Pipefy emulator on :8080 with the demo fixture"

tools:
	@scripts/setup-tools.sh

# The demo needs moto and cargo-lambda only; the tests also need checkov, the Pipefy SDK and
# Chromium.
demo-tools:
	@scripts/setup-tools.sh demo

demo: demo-tools
	@scripts/demo.sh

test: tools lint unit infra-check

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

unit:
	cargo test --workspace --no-fail-fast

infra-check:
	@tests/infra/check.sh

build: tools
	@rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu || { \
	  echo "make build: the Rust standard library for aarch64-unknown-linux-gnu is missing; run 'rustup target add aarch64-unknown-linux-gnu' (needs network)" >&2; exit 1; }
	@for f in sync-scheduled sync-upload notify; do \
	  cargo lambda build --release --arm64 --output-format zip -p $$f --lambda-dir target/lambda || exit 1; \
	done
	@ls -l target/lambda/*/bootstrap.zip

bench: tools
	@scripts/bench.sh

emulator:
	cargo run -p pipefy-emulator -- --port 8080 --fixture tests/fixtures/emulator/demo.json
