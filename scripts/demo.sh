#!/usr/bin/env bash
# Ten seconds of Tapio: run the agent while causing a refused connect, a
# connect timeout (in a namespace of its own), an abnormal exit and slow
# I/O on a loop device; show the events and the loss counters; clean up.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "demo: run as root (it loads eBPF programs and creates a namespace and a loop device)" >&2; exit 2; }
[ -x target/release/tapio-agent ] && [ -x target/release/tapio ] && [ -x target/controller/tapio-controller ] || scripts/release.sh
work=$(mktemp -d)
ns=tapio-demo-$$
loopdev=
agent_pid=
cleanup() {
  [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null || true
  [ -n "$loopdev" ] && losetup -d "$loopdev" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# slow-I/O threshold 0, so every loop-device request is reported
target/controller/tapio-controller compile docs/profiles/production-default.yaml \
  | python3 -c 'import json,sys; c=json.load(sys.stdin); c["storage"]["slow_io_warning_ns"]=0; print(json.dumps(c))' > "$work/config.json"
target/release/tapio-agent run --config "$work/config.json" --no-stdout --data-dir "$work/store" \
  --metrics-file "$work/tapio.prom" --metrics-interval-secs 1 2> "$work/agent.log" &
agent_pid=$!
for _ in $(seq 100); do grep -q "observer process attached" "$work/agent.log" && break; sleep 0.1; done
echo "agent running; making trouble..."

# 1. a refused connect
python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); p=s.getsockname()[1]; s.close(); t=socket.socket(); 
try: t.connect(("127.0.0.1",p))
except ConnectionRefusedError: pass' || true
# 2. a connect timeout: SYNs silently dropped in a namespace of our own
ip netns add "$ns"; ip -n "$ns" link set lo up
ip netns exec "$ns" sysctl -qw net.ipv4.tcp_syn_retries=1
ip netns exec "$ns" nft add table inet demo
ip netns exec "$ns" nft add chain inet demo inp '{ type filter hook input priority 0 ; }'
ip netns exec "$ns" nft add rule inet demo inp tcp dport 9999 drop
ip netns exec "$ns" python3 -c 'import socket; s=socket.socket(); s.settimeout(10)
try: s.connect(("127.0.0.1",9999))
except OSError: pass' &
timeout_pid=$!
# 3. an abnormal exit
sh -c 'exit 3' || true
# 4. slow I/O on a loop device (direct, so each write is a request)
truncate -s 16M "$work/disk.img"
loopdev=$(losetup -f --show "$work/disk.img")
dd if=/dev/zero of="$loopdev" bs=4k count=4 oflag=direct status=none
wait "$timeout_pid" || true
sleep 1.5
kill -TERM "$agent_pid"; wait "$agent_pid" || true; agent_pid=

echo
echo "== evidence (tapio events)"
# (the root disk's own requests are reported too at threshold 0; shown: the loop device's)
target/release/tapio events --data-dir "$work/store" | awk 'NR==1 || !/storage.slow_io/ || /dev 7:/'
echo
echo "== loss counters (tapio metrics)"
target/release/tapio metrics --metrics-file "$work/tapio.prom" | grep -E "lost|drops|malformed|no losses|non-zero" || true
