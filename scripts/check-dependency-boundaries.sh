#!/usr/bin/env bash
# Fails when a crate depends (directly or transitively, normal deps only)
# on something the architecture forbids it. docs/architecture.md says why.
set -euo pipefail
cd "$(dirname "$0")/.."

out_dir=${TAPIO_TREE_DIR:-$(mktemp -d -t tapio-tree.XXXXXX)}
fail=0

check() {
  local crate=$1; shift
  local tree="$out_dir/$crate.tree"
  cargo tree -p "$crate" -e normal --prefix none --target all 2>/dev/null | awk '{print $1}' | sort -u > "$tree"
  for dep in "$@"; do
    if grep -qx -- "$dep" "$tree"; then
      echo "BOUNDARY: $crate depends on forbidden crate '$dep'" >&2
      fail=1
    fi
  done
  echo "boundaries: $crate ok against: $*"
}

check tapio-agent kube k8s-openapi axum hyper tonic reqwest tokio tapio-profile serde_yaml sha2 mio httparse
check tapio-wire kube k8s-openapi axum hyper tonic reqwest tokio tiny_http ureq h2 http libbpf-rs serde_yaml sha2
check tapio-cli serde_yaml sha2 tapio-profile libbpf-rs libbpf-sys libbpf-cargo tapio-bpf tokio hyper
check tapio-profile kube k8s-openapi axum hyper tonic reqwest tokio serde_yaml tiny_http libbpf-rs
check tapio-common libbpf-rs libbpf-sys tokio hyper serde_yaml sha2 tapio-wire

echo "cargo tree snapshots: $out_dir"
exit $fail
