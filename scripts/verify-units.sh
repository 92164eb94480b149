#!/usr/bin/env bash
# systemd-analyze verify on both units, with @BINDIR@ pointing at the
# release binaries (verify checks that ExecStart exists).
set -euo pipefail
cd "$(dirname "$0")/.."
bindir=$PWD/target/release
[ -x "$bindir/tapio-agent" ] && [ -x "$bindir/tapio-controller" ] || { echo "release binaries missing: run make release" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for u in tapio-agent tapio-controller; do
  sed "s|@BINDIR@|$bindir|g" "scripts/systemd/$u.service" > "$tmp/$u.service"
done
out=$(systemd-analyze verify "$tmp/tapio-agent.service" "$tmp/tapio-controller.service" 2>&1) || { echo "$out"; exit 1; }
# verify exits 0 on some warnings; treat any line about our units as failure
if echo "$out" | grep -E "tapio-(agent|controller)\.service" ; then
  exit 1
fi
echo "systemd-analyze verify: both units OK"
