#!/usr/bin/env bash
# Prints the stripped release size of the three binaries (scripts/release.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
for f in target/release/tapio-agent target/controller/tapio-controller target/release/tapio; do
  bin=${f##*/}
  if [ -f "$f" ]; then
    printf 'size: %-17s %9d bytes\n' "$bin" "$(stat -c %s "$f")"
  else
    printf 'size: %-17s (not built)\n' "$bin"
  fi
done
