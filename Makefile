# Tapio: the two commands a fresh machine needs are `make run` and
# `make test`; both install their prerequisites first (scripts/setup.sh).

CARGO ?= cargo
# The debug builds the tests drive carry the test hooks (docs/operations.md).
TEST_FEATURES = --features tapio-agent/test-hooks
PREFIX ?= /usr/local
DESTDIR ?=
ARGS ?=
export TAPIO_SKIP_LOG ?= $(CURDIR)/target/tapio-skipped-tests.txt
# Named by tapio_build_info in the agent's metrics.
export TAPIO_GIT_COMMIT ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)

.PHONY: all setup build release run test lean fmt clippy unit boundaries sizes \
        smoke demo install uninstall units dist reliability bench clean test-kernels smoke-vm image

all: build

setup:
	@scripts/setup.sh

build: setup
	$(CARGO) build --workspace --bins $(TEST_FEATURES)

release: setup
	CARGO=$(CARGO) scripts/release.sh

## Run the agent in the foreground (as root): JSON lines on stdout.
run: release
	./target/release/tapio-agent run $(ARGS)

## Everything CI checks: the lean gate (fmt, clippy, unit + real-kernel +
## end-to-end tests, eBPF and binary budgets, boundaries, systemd units).
test: setup
	scripts/verify-lean.sh

lean: test

## The real-kernel tests on Debian 11/12/13 kernels in VMs and on this
## host (part of `make test`); target/kernel-matrix/summary.md.
test-kernels: setup
	scripts/kernels/matrix.sh

fmt:
	$(CARGO) fmt --all --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit: build
	@mkdir -p target && rm -f $(TAPIO_SKIP_LOG)
	$(CARGO) test --workspace $(TEST_FEATURES)

boundaries:
	scripts/check-dependency-boundaries.sh

sizes: release
	@scripts/sizes.sh

units: release
	scripts/verify-units.sh

## The fault and bad-input suite (also part of `make test`); prints the
## RELIABILITY lines docs/reliability.md quotes.
reliability: build
	bash -o pipefail -c '$(CARGO) test $(TEST_FEATURES) --test reliability --test store --test client --test e2e -- --nocapture --test-threads=1 2>&1 | tee target/reliability.log | grep -E "RELIABILITY|test result|FAILED|panicked"'

## Benchmarks: writes docs/benchmarks.md (as root; about 15 minutes).
bench: release
	$(CARGO) build --release -p tapio-bench
	python3 scripts/bench/run.py

## Smoke test of the release on a real systemd host: a Lima VM where
## limactl exists (macOS), else a Debian 12 VM under qemu (as root).
smoke: setup
	@if command -v limactl >/dev/null 2>&1; then scripts/lima/smoke.sh; \
	else scripts/vm/smoke.sh; fi

## The release tarball installed and run by systemd in a Debian 12 VM
## (qemu, Debian 12's kernel); results in target/smoke-vm/.
smoke-vm: setup
	scripts/vm/smoke.sh

## Ten seconds that show what Tapio does (as root).
demo: release
	scripts/demo.sh

## The container image (scripts/image/Containerfile) built here with
## buildah, and its binaries run from the image's filesystem.
image: setup
	scripts/image/build.sh

## Release tarball for this machine's architecture (dist/).
dist: release
	scripts/package.sh

install: release
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/systemd/system \
		$(DESTDIR)$(PREFIX)/share/tapio/profiles $(DESTDIR)$(PREFIX)/share/doc/tapio
	install -m 0755 target/release/tapio-agent target/controller/tapio-controller target/release/tapio $(DESTDIR)$(PREFIX)/bin/
	@if [ -z "$(DESTDIR)" ]; then getent passwd tapio >/dev/null || useradd --system --user-group --no-create-home \
		--home-dir /var/lib/tapio --shell /usr/sbin/nologin --comment "Tapio agent" tapio; fi
	for u in tapio-agent tapio-controller; do \
		sed 's|@BINDIR@|$(PREFIX)/bin|g' scripts/systemd/$$u.service > $(DESTDIR)$(PREFIX)/lib/systemd/system/$$u.service; \
		chmod 0644 $(DESTDIR)$(PREFIX)/lib/systemd/system/$$u.service; \
	done
	install -m 0644 docs/profiles/*.yaml $(DESTDIR)$(PREFIX)/share/tapio/profiles/
	install -m 0644 docs/*.md $(DESTDIR)$(PREFIX)/share/doc/tapio/
	@echo "installed under $(DESTDIR)$(PREFIX); then: systemctl daemon-reload && systemctl enable --now tapio-agent"

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/tapio-agent $(DESTDIR)$(PREFIX)/bin/tapio-controller $(DESTDIR)$(PREFIX)/bin/tapio
	rm -f $(DESTDIR)$(PREFIX)/lib/systemd/system/tapio-agent.service $(DESTDIR)$(PREFIX)/lib/systemd/system/tapio-controller.service
	rm -rf $(DESTDIR)$(PREFIX)/share/tapio $(DESTDIR)$(PREFIX)/share/doc/tapio

clean:
	$(CARGO) clean
	rm -rf dist
