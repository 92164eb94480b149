#!/bin/sh
# Runs inside a matrix VM (as root, over the host's root filesystem, made
# read-only with writable overlays): prepares the guest, runs `tapio-agent
# check` and each real-kernel test binary, and writes every result into
# the host directory $1 (shared read-write). Also runs natively, for the
# host row of the matrix.
#
#   guest.sh RESULTS_DIR AGENT_BIN TEST_BIN...
out=$1; agent=$2; shift 2
mkdir -p "$out"
exec > "$out/guest.log" 2>&1
set -x
uname -r > "$out/release"
grep -qs ' /sys/fs/bpf bpf ' /proc/mounts || mount -t bpf bpf /sys/fs/bpf
grep -qs ' /sys/kernel/tracing ' /proc/mounts || mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
for m in veth nf_tables loop; do modprobe "$m" 2>/dev/null || echo "modprobe $m failed (built in?)"; done
ip link set lo up 2>/dev/null
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then echo v2-only > "$out/cgroups"; else echo hybrid > "$out/cgroups"; fi
ulimit -n 65536 2>/dev/null || ulimit -n 4096
# Kernel tests may not skip here: a skip is recorded and fails the row.
export TAPIO_SKIP_LOG="$out/skipped.txt" TAPIO_LEAN_REQUIRE_NET=1
export TAPIO_STORM_CONNECTS=${TAPIO_STORM_CONNECTS:-20000} RUST_BACKTRACE=1
# No test turns tracefs events on or off here: under TCG, patching a
# tracepoint's call sites while another vCPU runs them can leave a vCPU
# looping on a stale int3 (docs/operations.md). The tests that use an
# ftrace instance as an oracle go without it in the guests.
export TAPIO_NO_TRACEFS_EVENTS=1
: > "$out/skipped.txt"
: > "$out/results"
"$agent" check > "$out/check.json" 2> "$out/check.err"
echo "tapio-agent-check $?" >> "$out/results"
# Each test binary has a deadline of its own (every wait inside a test
# has one too): a binary still running at it is recorded with what the
# guest's tasks were doing, then killed, and the next binary runs. A hang
# is then a named failure with evidence, not a VM that times out.
limit=${TAPIO_TEST_BINARY_TIMEOUT:-600}
set +x
for bin in "$@"; do
  name=$(basename "$bin" | sed 's/-[0-9a-f]*$//')
  start=$(date +%s)
  echo "running $name"
  # Its own process group, so that a kill reaches every helper it started.
  setsid "$bin" --test-threads=1 ${TAPIO_TEST_FILTER:-} > "$out/test-$name.log" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null && [ $(( $(date +%s) - start )) -lt "$limit" ]; do sleep 1; done
  if kill -0 "$pid" 2>/dev/null; then
    {
      echo "== $name still running after $limit s: the test in progress"
      tail -n 3 "$out/test-$name.log"
      echo "== tasks"
      ps -eo pid,ppid,stat,wchan:32,etimes,args | grep -v ' \[.*\]$'
      echo "== kernel stacks of tasks not sleeping interruptibly"
      for s in /proc/[0-9]*/stat; do
        p=${s#/proc/}; p=${p%/stat}
        case "$(cut -d' ' -f3 "$s" 2>/dev/null)" in D|T|t|R) echo "-- $p $(cat /proc/$p/comm 2>/dev/null)"; cat "/proc/$p/stack" 2>/dev/null ;; esac
      done
      echo "== dmesg (last 40 lines)"
      dmesg | tail -n 40
    } > "$out/hang-$name.txt" 2>&1
    kill -KILL -- "-$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    rc=timeout
  else
    wait "$pid"
    rc=$?
  fi
  echo "$name $rc $(( $(date +%s) - start ))" >> "$out/results"
done
echo done > "$out/finished"
