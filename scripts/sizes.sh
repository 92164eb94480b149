#!/usr/bin/env bash
# Prints the stripped release size of the three binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
for bin in tapio-agent tapio-controller tapio; do
  f=target/release/$bin
  if [ -f "$f" ]; then
    printf 'size: %-17s %9d bytes\n' "$bin" "$(stat -c %s "$f")"
  else
    printf 'size: %-17s (not built)\n' "$bin"
  fi
done
