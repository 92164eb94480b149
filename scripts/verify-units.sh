#!/usr/bin/env bash
# systemd-analyze verify on both units, with @BINDIR@ pointing at the
# release binaries (verify checks that ExecStart exists).
set -euo pipefail
cd "$(dirname "$0")/.."
bindir_agent=$PWD/target/release bindir_controller=$PWD/target/controller
[ -x "$bindir_agent/tapio-agent" ] && [ -x "$bindir_controller/tapio-controller" ] || { echo "release binaries missing: run make release" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s|@BINDIR@|$bindir_agent|g" scripts/systemd/tapio-agent.service > "$tmp/tapio-agent.service"
sed "s|@BINDIR@|$bindir_controller|g" scripts/systemd/tapio-controller.service > "$tmp/tapio-controller.service"
out=$(systemd-analyze verify "$tmp/tapio-agent.service" "$tmp/tapio-controller.service" 2>&1) || { echo "$out"; exit 1; }
# verify exits 0 on some warnings; treat any line about our units as failure
if echo "$out" | grep -E "tapio-(agent|controller)\.service" ; then
  exit 1
fi
echo "systemd-analyze verify: both units OK"

# Hardening: systemd's own exposure score (0 best, 10 worst). The agent
# must stay at or below 3.0 (it loads BPF, so it cannot reach the
# controller's score); the controller at or below 2.0.
for u in tapio-agent:3.0 tapio-controller:2.0; do
  name=${u%%:*}; max=${u#*:}
  score=$(systemd-analyze security --offline=yes "$tmp/$name.service" 2>/dev/null \
    | sed -n "s/.*Overall exposure level for $name.service: \([0-9.]*\).*/\1/p")
  [ -n "$score" ] || { echo "systemd-analyze security: no score for $name"; exit 1; }
  echo "systemd-analyze security: $name.service exposure $score (limit $max)"
  awk -v s="$score" -v m="$max" 'BEGIN { exit !(s <= m) }' || { echo "$name.service: exposure $score > $max"; exit 1; }
done
