#!/usr/bin/env bash
# Runs the smoke test inside a Lima VM (macOS, or Linux without root).
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v limactl >/dev/null 2>&1 || { echo "make smoke off Linux needs Lima: https://lima-vm.io (brew install lima)" >&2; exit 2; }
name=${TAPIO_LIMA_NAME:-tapio}
if ! limactl list -q 2>/dev/null | grep -qx "$name"; then
  limactl start --name "$name" --tty=false scripts/lima/tapio.yaml
else
  limactl start "$name" >/dev/null 2>&1 || true
fi
limactl shell "$name" sudo -E env "PATH=/root/.cargo/bin:$PATH" bash -c "cd '$PWD' && make setup && scripts/smoke-ebpf-network.sh"
