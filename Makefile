# Tapio: the two commands a fresh machine needs are `make run` and
# `make test`; both install their prerequisites first (scripts/setup.sh).

CARGO ?= cargo
PREFIX ?= /usr/local
ARGS ?=
export TAPIO_SKIP_LOG ?= $(CURDIR)/target/tapio-skipped-tests.txt

.PHONY: all setup build release run test fmt clippy unit boundaries sizes clean

all: build

setup:
	@scripts/setup.sh

build: setup
	$(CARGO) build --workspace --bins

release: setup
	$(CARGO) build --release -p tapio-agent -p tapio-controller -p tapio-cli

## Run the agent in the foreground (as root): JSON lines on stdout.
run: release
	./target/release/tapio-agent run $(ARGS)

fmt:
	$(CARGO) fmt --all --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Unit, real-kernel and end-to-end tests. Kernel tests skip loudly
## without BPF and list themselves in $(TAPIO_SKIP_LOG).
unit: build
	@mkdir -p target && rm -f $(TAPIO_SKIP_LOG)
	$(CARGO) test --workspace
	@if [ -s $(TAPIO_SKIP_LOG) ]; then echo "SKIPPED kernel tests (not verified on this host):"; sed 's/^/  - /' $(TAPIO_SKIP_LOG); fi

boundaries:
	scripts/check-dependency-boundaries.sh

sizes: release
	@scripts/sizes.sh

test: setup fmt clippy unit boundaries sizes

clean:
	$(CARGO) clean
