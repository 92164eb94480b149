#!/usr/bin/env bash
# make test-kernels: the real-kernel tests on every kernel users run.
#
# Boots each pinned Debian kernel (kernels.conf, fetched by fetch.sh) with
# virtme-ng over this machine's root filesystem (cgroup v2 only in the
# guest), runs guest.sh there, and runs the same selection natively for
# the host row. Writes target/kernel-matrix/summary.md and prints it.
#
# Exit: 0 every kernel passed; 1 a kernel failed or could not boot;
# 3 none failed but a kernel could not be fetched (SKIPPED: not verified).
# Environment:
#   TAPIO_KERNELS="5.10 6.1"   only these (default: all of kernels.conf)
#   TAPIO_VM_TIMEOUT=1200      seconds per guest, boot included; a guest
#                              whose kernel locks up is stopped at once and
#                              booted again, three boots at most (see boot)
#   TAPIO_TEST_BINARY_TIMEOUT=600  seconds per test binary in a guest (guest.sh)
#   TAPIO_MATRIX_HOST=0        leave the host row out
#   TAPIO_SKIP_LOG             where skipped kernels are recorded (lean gate)
#   TAPIO_MATRIX_TESTS="network"  only these test binaries (default: all six)
#   TAPIO_TEST_FILTER="oom"    only the tests whose names contain this (a
#                              developer's loop; a filtered run is no verdict)
set -uo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
out=$repo/target/kernel-matrix
rm -rf "$out" && mkdir -p "$out"
say() { printf 'matrix: %s\n' "$*" >&2; }
t0=$(date +%s)

tests=(${TAPIO_MATRIX_TESTS:-network process storage check attribution capabilities})
say "building the agent and the real-kernel test binaries"
# With the test hooks, as the lean gate builds them (docs/operations.md).
cargo build --workspace --bins -q --features tapio-agent/test-hooks || { say "build failed"; exit 1; }
bins=$(cargo test --no-run --features tapio-agent/test-hooks --message-format=json $(printf -- '--test %s ' "${tests[@]}") 2>/dev/null \
  | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["executable"])
')
[ "$(echo "$bins" | grep -c .)" -eq "${#tests[@]}" ] || { say "expected ${#tests[@]} test binaries, got: $bins"; exit 1; }
agent=$repo/target/debug/tapio-agent
bins=$(echo $bins)

vng=$(command -v vng || echo "${TAPIO_KERNEL_CACHE:-$HOME/.cache/tapio-kernels}/venv/bin/vng")
# vng runs its helpers (virtme-run) by name: the venv make setup made must
# be on PATH, not only vng itself.
PATH=$(dirname "$vng"):$PATH
for tool in "$vng" qemu-system-x86_64 depmod; do
  command -v "$tool" >/dev/null || { say "missing $tool: run make setup"; exit 1; }
done

fetched=$(scripts/kernels/fetch.sh ${TAPIO_KERNELS:-})
echo "$fetched" | sed 's/^/  /' >&2

# KVM only when a probe boot succeeds. Seen on these VMs: `-cpu host` dies
# on an MSR, or the guest hangs right after "Probing EDD". A KVM boot that
# works takes a few seconds; the probe gives it 30 (a hung one had cost 90
# of every CI run).
accel=(--disable-kvm)
first=$(echo "$fetched" | awk '$3 != "UNAVAILABLE" {print $3; exit}')
if [ -n "$first" ] && [ -w /dev/kvm ]; then
  probe=$out/kvm-probe && mkdir -p "$probe"
  timeout 30 "$vng" -r "$first" --user root --rwdir "$probe" --cwd / --memory 1G --cpus 2 \
    --exec "echo ok > $probe/ok" > "$probe/console.log" 2>&1 </dev/null
  if [ -s "$probe/ok" ]; then accel=(); say "KVM probe boot succeeded: using KVM"
  else say "KVM probe boot failed ($(grep -a -m1 -o 'failed to set MSR[^ ]* [^ ]*' "$probe/console.log" || echo 'see target/kernel-matrix/kvm-probe')): using TCG"; fi
fi

row() { # name distro version dir seconds boot_status
  local name=$1 distro=$2 version=$3 dir=$4 secs=$5 booted=$6
  python3 - "$name" "$distro" "$version" "$dir" "$secs" "$booted" <<'PY'
import json, os, re, sys
name, distro, version, d, secs, booted = sys.argv[1:]
def read(p, default=""):
    try:
        return open(os.path.join(d, p)).read()
    except OSError:
        return default
release = read("release").strip() or "?"
cgroups = read("cgroups").strip() or "?"
observers = []
try:
    for c in json.loads(read("check.json", "{}")).get("checks", []):
        if c.get("name", "").startswith("observer:") and c.get("status") == "pass":
            observers.append(c["name"].split(":", 1)[1])
except ValueError:
    pass
passed = failed = 0
failing = []
for line in read("results").splitlines():
    parts = line.split()
    if len(parts) >= 2 and parts[1] != "0":
        failing.append(parts[0])
for f in sorted(os.listdir(d)) if os.path.isdir(d) else []:
    if f.startswith("test-") and f.endswith(".log"):
        for m in re.finditer(r"test result: \w+\. (\d+) passed; (\d+) failed", read(f)):
            passed += int(m.group(1)); failed += int(m.group(2))
skipped = [l for l in read("skipped.txt").splitlines() if l.strip()]
finished = bool(read("finished"))
if booted != "ok" or not finished:
    verdict = "FAIL (did not boot or finish: %s)" % booted
elif failing or failed or skipped:
    verdict = "FAIL (%s)" % ", ".join(failing + ["skipped: " + s for s in skipped])
else:
    verdict = "PASS"
print("\t".join([name, distro, version, release, cgroups, " ".join(observers) or "none",
                 "%d/%d" % (passed, passed + failed), secs, verdict]))
PY
}

# A failing row prints which tests failed and why, so a CI log that keeps
# only the gate's output still says what broke.
why_failed() {
  local f
  for f in "$1"/test-*.log; do
    [ -f "$f" ] || continue
    grep -a -E '^test .* \.\.\. FAILED$|panicked at' -A4 "$f" | head -40 | sed "s|^|  $(basename "$f" .log): |" >&2
  done
  for f in "$1"/hang-*.txt; do
    [ -f "$f" ] || continue
    head -n 60 "$f" | sed "s|^|  $(basename "$f" .txt): |" >&2
  done
  # A guest that ran out of time: the test it was in (libtest names a test
  # as it starts it).
  if [ ! -f "$1/finished" ]; then
    for f in "$1"/test-*.log; do
      [ -f "$f" ] && ! grep -aq '^test result:' "$f" && tail -n 3 "$f" | sed "s|^|  unfinished $(basename "$f" .log): |" >&2
    done
    # The guest kernel's last words (a panic, a soft lockup, hung tasks).
    [ -f "$1/console.log" ] && tail -n 40 "$1/console.log" | sed 's/^/  console: /' >&2
  fi
  [ -s "$1/check.err" ] && grep -a -i -m5 'fail' "$1/check.err" | sed 's/^/  check: /' >&2
  return 0
}

# Boots one guest, and watches its console. A guest kernel that keeps
# reporting a soft lockup or an RCU stall is stopped then (exit 125), not
# at the guest's timeout. Under TCG (QEMU 7.2, multi-threaded) this is
# seen when the kernel patches a tracepoint's jump label while another
# vCPU runs through it: that vCPU keeps executing a stale translation of
# the patch's int3 over a site that memory already holds as a NOP; the
# kernel's int3 handler finds no int3 there and resumes at the same
# address, forever. It happens without Tapio, with only tracefs
# toggling sched_process_exit while threads exit (docs/operations.md).
lockup_re='soft lockup - CPU|rcu_sched self-detected stall|rcu: INFO: rcu_sched detected stalls'
boot() { # vmlinuz dir
  local vmlinuz=$1 dir=$2 pid
  timeout "${TAPIO_VM_TIMEOUT:-1200}" "$vng" -v "${accel[@]}" -r "$vmlinuz" --user root --cpus 2 --memory 2G \
    --rwdir "$dir" --cwd "$repo" --exec "TAPIO_TEST_FILTER='${TAPIO_TEST_FILTER:-}' $repo/scripts/kernels/guest.sh $dir $agent $bins" \
    > "$dir/console.log" 2>&1 </dev/null &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    # Two reports: a guest only slowed down by a busy host may print one
    # and go on; a stuck vCPU repeats it every half minute.
    if [ "$(grep -acE "$lockup_re" "$dir/console.log")" -ge 2 ]; then
      sleep 5 # the rest of the report
      pkill -KILL -f "path=$dir,security_model" 2>/dev/null
      kill "$pid" 2>/dev/null
      wait "$pid" 2>/dev/null
      return 125
    fi
    sleep 2
  done
  wait "$pid"
}

# The first lockup report of a console: what was stuck, and where.
lockup_excerpt() {
  grep -a -m1 -E -A40 "$lockup_re" "$1" \
    | grep -a -E 'lockup|stall|RIP: 0010|Comm:|CPU: [0-9]+ PID' | head -n 8
}

rows=()
lockups=()
status=0
while read -r name distro suite pkg version sha; do
  case "$name" in ''|'#'*) continue ;; esac
  if [ -n "${TAPIO_KERNELS:-}" ] && ! echo " $TAPIO_KERNELS " | grep -q " $name "; then continue; fi
  vmlinuz=$(echo "$fetched" | awk -v n="$name" '$2 == n {print $3}')
  if [ -z "$vmlinuz" ] || [ "$vmlinuz" = UNAVAILABLE ]; then
    why=$(echo "$fetched" | awk -v n="$name" '$2 == n {$1=$2=$3=""; print}' | sed 's/^ *//')
    echo "*** SKIPPED: kernel $name ($distro): cannot be fetched: ${why:-not listed} ***" >&2
    [ -n "${TAPIO_SKIP_LOG:-}" ] && echo "kernel matrix $name: cannot be fetched: ${why:-?}" >> "$TAPIO_SKIP_LOG"
    rows+=("$name	$distro	$version	-	-	-	-	-	SKIPPED (not verified)")
    [ "$status" = 0 ] && status=3
    continue
  fi
  dir=$out/$name
  for attempt in 1 2 3; do
    rm -rf "$dir" && mkdir -p "$dir"
    say "booting $name ($distro, $version)$([ "$attempt" -gt 1 ] && echo ", boot $attempt")"
    s=$(date +%s)
    boot "$vmlinuz" "$dir"
    rc=$?
    [ "$rc" = 125 ] && [ "$attempt" -lt 3 ] || break
    # The emulator's lockup (see boot): recorded, loudly, and the kernel
    # booted again, at most three boots in all. A third lockup fails the
    # row like any other failure.
    mkdir -p "$out/lockups"
    cp "$dir/console.log" "$out/lockups/$name-boot$attempt-console.log"
    echo "*** $name: guest kernel lockup under TCG after $(( $(date +%s) - s )) s on boot $attempt; booting it again (console: target/kernel-matrix/lockups/$name-boot$attempt-console.log) ***" >&2
    excerpt=$(lockup_excerpt "$dir/console.log")
    echo "$excerpt" | sed 's/^/  lockup: /' >&2
    lockups+=("$name, boot $attempt: a guest kernel lockup after $(( $(date +%s) - s )) s ($(echo "$excerpt" | grep -a -m1 -o 'RIP: 0010:[^ ]*' || echo 'no RIP')); a later boot decided the row")
  done
  booted=ok
  [ "$rc" = 124 ] && booted="timed out after ${TAPIO_VM_TIMEOUT:-1200} s"
  [ "$rc" = 125 ] && booted="guest kernel lockup on three boots"
  [ -s "$dir/release" ] || booted="no guest output (exit $rc; see $dir/console.log)"
  r=$(row "$name" "$distro" "$version" "$dir" "$(( $(date +%s) - s ))" "$booted")
  rows+=("$r")
  say "$r"
  case "$r" in *PASS) ;; *) status=1; why_failed "$dir" ;; esac
done < scripts/kernels/kernels.conf

if [ "${TAPIO_MATRIX_HOST:-1}" = 1 ]; then
  dir=$out/host && mkdir -p "$dir"
  say "host kernel $(uname -r), natively"
  s=$(date +%s)
  scripts/kernels/guest.sh "$dir" "$agent" $bins
  r=$(row host "this machine" "-" "$dir" "$(( $(date +%s) - s ))" ok)
  rows+=("$r")
  say "$r"
  case "$r" in *PASS) ;; *) status=1; why_failed "$dir" ;; esac
fi

total=$(( $(date +%s) - t0 ))
{
  echo "| kernel | distribution | package | release | cgroups | observers loaded | tests passed | seconds | result |"
  echo "|---|---|---|---|---|---|---|---|---|"
  for r in "${rows[@]}"; do echo "| ${r//	/ | } |"; done
  echo
  echo "Accelerator: $([ ${#accel[@]} = 0 ] && echo KVM || echo TCG). Matrix time: ${total} s. Tests per kernel: ${tests[*]} (storm: ${TAPIO_STORM_CONNECTS:-20000} connects)."
  for l in "${lockups[@]}"; do echo; echo "Booted again: $l (target/kernel-matrix/lockups/)."; done
} > "$out/summary.md"
echo
cat "$out/summary.md"
case "$status" in
  0) echo "KERNEL MATRIX: PASS" ;;
  3) echo "KERNEL MATRIX: SKIPPED kernels (not verified)" ;;
  *) echo "KERNEL MATRIX: FAIL (details under target/kernel-matrix/<kernel>/)" ;;
esac
exit "$status"
