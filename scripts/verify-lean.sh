#!/usr/bin/env bash
# The lean gate: formatting, lints, every test (kernel ones included),
# the kernel matrix (every real-kernel test on Debian 11/12/13 kernels in
# VMs), the release under systemd in a Debian 12 VM, binary and eBPF
# budgets, dependency boundaries, unit hardening scores. It never passes silently
# when it could not verify something: the last line is
#   LEAN: PASS | LEAN: PARTIAL (<why>) | LEAN: FAIL (<why>)
#
# Environment:
#   AGENT_MAX_BYTES     (1000000)  fail above (issue #14: the agent ≤ 1.0 MB)
#   AGENT_TARGET_BYTES  (990000)   warn above (1 % from the limit)
#   CLI_MAX_BYTES       (900000)   fail above
#   TAPIO_LEAN_ALLOW_DEGRADED=1    skipped kernel/network tests give PARTIAL instead of FAIL
#   TAPIO_LEAN_REQUIRE_NET=1       kernel/network tests may not skip at all (they fail instead)
#   TAPIO_KERNELS, TAPIO_VM_TIMEOUT see scripts/kernels/matrix.sh
set -uo pipefail
cd "$(dirname "$0")/.."

AGENT_MAX_BYTES=${AGENT_MAX_BYTES:-1000000}
AGENT_TARGET_BYTES=${AGENT_TARGET_BYTES:-990000}
CLI_MAX_BYTES=${CLI_MAX_BYTES:-900000}
CARGO=${CARGO:-cargo}
# The binaries and tests the gate drives carry the test hooks
# (docs/operations.md, "Test hooks"); release builds never do.
TEST_FEATURES=(--features tapio-agent/test-hooks)
export TAPIO_SKIP_LOG=${TAPIO_SKIP_LOG:-$PWD/target/tapio-skipped-tests.txt}

failures=()
warnings=()
# Each step's wall time, printed at the end: CI gives `make test` 30
# minutes (docs/operations.md, "Supported kernels").
gate_start=$(date +%s)
step_name="" step_start=$gate_start
timings=()
step_done() {
  [ -n "$step_name" ] && timings+=("$(( $(date +%s) - step_start )) s  $step_name")
  step_start=$(date +%s)
}
step() { step_done; step_name=$1; printf '\n== %s\n' "$*"; }
fail() { failures+=("$1"); printf 'FAIL: %s\n' "$1"; }

step "format"
$CARGO fmt --all --check || fail "cargo fmt"

step "clippy"
$CARGO clippy --workspace --all-targets -- -D warnings || fail "clippy"
$CARGO clippy --workspace --all-targets "${TEST_FEATURES[@]}" -- -D warnings || fail "clippy (test hooks)"

step "build (binaries the tests drive)"
$CARGO build --workspace --bins "${TEST_FEATURES[@]}" || fail "build"

step "tests (unit, real-kernel, end-to-end)"
mkdir -p target && rm -f "$TAPIO_SKIP_LOG"
$CARGO test --workspace "${TEST_FEATURES[@]}" || fail "tests"
skipped=0
if [ -s "$TAPIO_SKIP_LOG" ]; then
  skipped=$(wc -l < "$TAPIO_SKIP_LOG")
  echo "SKIPPED (not verified on this host):"
  sed 's/^/  - /' "$TAPIO_SKIP_LOG"
fi

step "eBPF object budgets"
$CARGO test -q -p tapio-agent bpf_objects_stay_within_budget -- --nocapture 2>/dev/null | grep '^BPF-BUDGET' | sed 's/^BPF-BUDGET //' \
  | awk '{printf "%-8s %7s %5s %20s %-12s %s\n", $1, $2, $3, $4, $5, $6}' || fail "eBPF budgets"
$CARGO test -q -p tapio-agent bpf_objects_stay_within_budget >/dev/null 2>&1 || fail "eBPF budgets exceeded"

step "dependency boundaries"
tree_dir=$(mktemp -d -t tapio-tree.XXXXXX)
TAPIO_TREE_DIR=$tree_dir scripts/check-dependency-boundaries.sh || fail "dependency boundaries"
for c in tapio-agent tapio-controller tapio-cli tapio-wire; do
  $CARGO tree -p "$c" -e normal > "$tree_dir/$c.full.txt" 2>/dev/null
done
echo "cargo tree snapshots: $tree_dir"

step "release build and binary budgets"
if CARGO=$CARGO scripts/release.sh; then
  agent=$(stat -c %s target/release/tapio-agent)
  cli=$(stat -c %s target/release/tapio)
  ctl=$(stat -c %s target/controller/tapio-controller)
  printf 'tapio-agent       %9d bytes (hard %d, target %d)\n' "$agent" "$AGENT_MAX_BYTES" "$AGENT_TARGET_BYTES"
  printf 'tapio             %9d bytes (hard %d)\n' "$cli" "$CLI_MAX_BYTES"
  printf 'tapio-controller  %9d bytes (reported only)\n' "$ctl"
  [ "$agent" -le "$AGENT_MAX_BYTES" ] || fail "tapio-agent $agent bytes > AGENT_MAX_BYTES $AGENT_MAX_BYTES"
  [ "$agent" -le "$AGENT_TARGET_BYTES" ] || { warnings+=("agent above target"); echo "WARN: tapio-agent $agent bytes > AGENT_TARGET_BYTES $AGENT_TARGET_BYTES"; }
  [ "$cli" -le "$CLI_MAX_BYTES" ] || fail "tapio $cli bytes > CLI_MAX_BYTES $CLI_MAX_BYTES"
else
  fail "release build"
fi

step "kernel matrix (Debian 11/12/13 kernels in VMs + this host; scripts/kernels/)"
TAPIO_TEST_FILTER= scripts/kernels/matrix.sh # the gate runs every test
case $? in
  0) ;;
  3) echo "kernel matrix: some kernels SKIPPED (not verified)" ;;
  *) fail "kernel matrix" ;;
esac
if grep -q '^Booted again' target/kernel-matrix/summary.md 2>/dev/null; then
  warnings+=("a matrix guest locked up under TCG and was booted again")
  grep '^Booted again' target/kernel-matrix/summary.md | sed 's/^/WARN: /'
fi

step "the release under systemd in a Debian 12 VM (make smoke-vm)"
scripts/vm/smoke.sh || fail "smoke-vm"

step "container image (make image: buildah, binaries run from the image)"
scripts/image/build.sh || fail "make image"

step "systemd units"
if command -v systemd-analyze >/dev/null 2>&1; then
  scripts/verify-units.sh || fail "systemd-analyze verify"
else
  echo "SKIPPED: systemd-analyze not installed; units not verified"
  echo "systemd-analyze verify: not installed" >> "$TAPIO_SKIP_LOG"
fi

step_done
echo
echo "TIMES (wall seconds per step):"
printf '  %s\n' "${timings[@]}"
echo "make test took $(( $(date +%s) - gate_start )) s"

# Every skip, the kernel matrix's included, is in the log.
skipped=0
if [ -s "$TAPIO_SKIP_LOG" ]; then
  skipped=$(wc -l < "$TAPIO_SKIP_LOG")
  echo "SKIPPED (not verified):"
  sed 's/^/  - /' "$TAPIO_SKIP_LOG"
fi

echo
if [ "${#failures[@]}" -gt 0 ]; then
  echo "LEAN: FAIL ($(IFS=';'; echo "${failures[*]}"))"
  exit 1
fi
if [ "$skipped" -gt 0 ]; then
  if [ "${TAPIO_LEAN_ALLOW_DEGRADED:-0}" = 1 ]; then
    echo "LEAN: PARTIAL ($skipped required check(s) skipped; TAPIO_LEAN_ALLOW_DEGRADED=1)"
    exit 0
  fi
  echo "LEAN: FAIL ($skipped required check(s) skipped; set TAPIO_LEAN_ALLOW_DEGRADED=1 to accept a PARTIAL run)"
  exit 1
fi
if [ "${#warnings[@]}" -gt 0 ]; then
  echo "WARNINGS:"
  printf '  - %s\n' "${warnings[@]}"
fi
echo "LEAN: PASS"
