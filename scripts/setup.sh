#!/usr/bin/env bash
# Installs what building and testing Tapio needs on Debian 12 / Ubuntu,
# idempotently: quiet when everything is present. Mounts bpffs and tracefs
# when they are absent (the real-kernel tests need them).
set -euo pipefail

PKGS=(gcc libc6-dev make pkg-config libelf-dev zlib1g-dev clang llvm bpftool nftables iproute2 procps python3
  # the kernel matrix (make test-kernels): VMs, modules, Debian's archive keys
  qemu-system-x86 kmod busybox-static debian-archive-keyring python3-venv util-linux
  # promtool and a real Prometheus + node_exporter for the metrics tests
  prometheus prometheus-node-exporter
  # make smoke-vm: a Debian 12 image with systemd; make image: buildah
  mmdebstrap e2fsprogs buildah runc
  # make bench: the peer measured side by side; curl asks the controller
  bpftrace curl)
# virtme-ng boots the matrix kernels; PyPI only, kept in a venv beside the
# kernel cache (pinned: the version the matrix was proven with).
VIRTME_NG_VERSION=1.42
KUBERNETES_VALIDATE_VERSION=1.37.0

say() { printf 'setup: %s\n' "$*" >&2; }

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
else
  say "this is not a Debian/Ubuntu system (no dpkg)."
  say "install the equivalents of: ${PKGS[*]}"
  say "then run: make test"
  for tool in clang pkg-config cc; do
    command -v "$tool" >/dev/null 2>&1 || { say "missing: $tool"; exit 1; }
  done
fi

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
      say "missing packages: ${missing[*]}; run as root or install them"; exit 1
    fi
  else
    SUDO=
  fi
  say "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >/dev/null
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# PyPI tools, unless already on PATH: virtme-ng (the kernel matrix) and
# kubernetes-validate (the manifests test), in a venv beside the kernel
# cache. Tests look there too.
venv=${TAPIO_KERNEL_CACHE:-$HOME/.cache/tapio-kernels}/venv
pypi=()
command -v vng >/dev/null 2>&1 || [ -x "$venv/bin/vng" ] || pypi+=("virtme-ng==$VIRTME_NG_VERSION")
command -v kubernetes-validate >/dev/null 2>&1 || [ -x "$venv/bin/kubernetes-validate" ] \
  || pypi+=("kubernetes-validate==$KUBERNETES_VALIDATE_VERSION")
if [ "${#pypi[@]}" -gt 0 ]; then
  say "installing from PyPI into $venv: ${pypi[*]}"
  { [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"; } >/dev/null \
    && "$venv/bin/pip" install -q "${pypi[@]}" >/dev/null \
    || say "could not install ${pypi[*]} (PyPI unreachable?): the tests that need them will fail"
fi

if ! command -v cargo >/dev/null 2>&1; then
  say "no Rust toolchain: install rustup (https://rustup.rs) with Rust >= 1.85"
  exit 1
fi

# bpffs and tracefs: only as root, only when absent.
if [ "$(id -u)" -eq 0 ]; then
  if [ -d /sys/fs/bpf ] && ! grep -qs ' /sys/fs/bpf bpf ' /proc/mounts; then
    mount -t bpf bpf /sys/fs/bpf 2>/dev/null && say "mounted bpffs at /sys/fs/bpf" || say "could not mount bpffs (not fatal)"
  fi
  if [ -d /sys/kernel/tracing ] && ! grep -qs ' /sys/kernel/tracing tracefs ' /proc/mounts; then
    mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null && say "mounted tracefs at /sys/kernel/tracing" || say "could not mount tracefs (not fatal)"
  fi
fi
exit 0
