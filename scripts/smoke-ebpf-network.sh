#!/usr/bin/env bash
# Smoke test on a real kernel (as root): start the agent, cause N refused
# connects to one port, and check that exactly N connection_refused events
# with that dst_port appear, no connection_timeout, and that the agent's
# final metrics close the loss accounting.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${SMOKE_CONNECTS:-20}
[ "$(id -u)" -eq 0 ] || { echo "smoke: needs root (or use make smoke, which uses Lima off Linux/root)" >&2; exit 2; }
[ -x target/release/tapio-agent ] || cargo build --release -p tapio-agent
work=$(mktemp -d)
agent_pid=
cleanup() { [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

target/release/tapio-agent run --metrics-file "$work/m.prom" > "$work/events.jsonl" 2> "$work/agent.log" &
agent_pid=$!
for _ in $(seq 100); do grep -q "observer network attached" "$work/agent.log" && break; sleep 0.1; done
grep -q "observer network attached" "$work/agent.log" || { cat "$work/agent.log"; echo "smoke: agent did not attach"; exit 1; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
refused=0
for _ in $(seq "$N"); do
  if ! python3 -c "import socket,sys; s=socket.socket(); s.settimeout(5); s.connect(('127.0.0.1', $port))" 2>/dev/null; then
    refused=$((refused + 1))
  fi
done
[ "$refused" -eq "$N" ] || { echo "smoke: only $refused of $N connects were refused"; exit 1; }
sleep 1
kill -TERM "$agent_pid"; wait "$agent_pid" || true; agent_pid=

got=$(grep -c "\"type\":\"kernel.network.connection_refused\".*\"dst_port\":$port[,}]" "$work/events.jsonl" || true)
timeouts=$(grep -c "\"type\":\"kernel.network.connection_timeout\".*\"dst_port\":$port[,}]" "$work/events.jsonl" || true)
m() { awk -v k="$1" '$1 == k {print $2}' "$work/m.prom"; }
kernel=$(m 'tapio_kernel_events_total{observer="network"}')
lost=$(m 'tapio_ringbuf_lost_total{observer="network"}')
received=$(m 'tapio_received_events_total{observer="network"}')
malformed=$(m 'tapio_malformed_events_total{observer="network"}')
queue=$(m 'tapio_queue_drops_total{observer="network"}')
suppressed=$(awk '/^tapio_events_suppressed_total\{observer="network"/ {s += $2} END {print s+0}' "$work/m.prom")
emitted=$(awk '/^tapio_events_total\{observer="network"/ {s += $2} END {print s+0}' "$work/m.prom")
echo "smoke: port $port: $got refused events (want $N), $timeouts timeouts (want 0)"
echo "smoke: kernel=$kernel lost=$lost received=$received malformed=$malformed queue=$queue suppressed=$suppressed emitted=$emitted"
ok=1
[ "$got" -eq "$N" ] || ok=0
[ "$timeouts" -eq 0 ] || ok=0
[ "$kernel" -eq $((lost + received)) ] || { echo "smoke: kernel_events != ringbuf_lost + received"; ok=0; }
[ "$received" -eq $((malformed + queue + suppressed + emitted)) ] || { echo "smoke: received != malformed + queue_drops + suppressed + emitted"; ok=0; }
if [ "$ok" = 1 ]; then echo "smoke: PASS"; else echo "smoke: FAIL"; exit 1; fi
