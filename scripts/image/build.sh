#!/usr/bin/env bash
# make image: builds scripts/image/Containerfile with buildah, here, and
# proves the result: tapio-agent --help and tapio-controller --help run
# from the built image's own filesystem.
#
# No registry is reachable from this kind of machine, so the Debian 12
# base is made locally once with mmdebstrap (Debian's archive) and
# imported as localhost/tapio-base:bookworm. TAPIO_IMAGE_BASE overrides it
# (e.g. docker.io/library/debian:bookworm-slim where a registry is).
set -euo pipefail
cd "$(dirname "$0")/../.."
say() { printf 'image: %s\n' "$*" >&2; }
export STORAGE_DRIVER=${STORAGE_DRIVER:-vfs}
bah=(buildah --storage-driver "$STORAGE_DRIVER")
command -v buildah >/dev/null || { say "buildah missing: run make setup"; exit 1; }
version=$(awk -F'"' '/^version = / {print $2; exit}' Cargo.toml)
tag=localhost/tapio:$version
cache=${TAPIO_KERNEL_CACHE:-$HOME/.cache/tapio-kernels}/image
mkdir -p "$cache"

base=${TAPIO_IMAGE_BASE:-localhost/tapio-base:bookworm}
if [ "$base" = localhost/tapio-base:bookworm ] && ! "${bah[@]}" inspect --type image "$base" >/dev/null 2>&1; then
  say "making the Debian 12 base once (mmdebstrap)"
  rm -f "$cache/base.tar"
  mmdebstrap --variant=minbase --include=libelf1,zlib1g bookworm "$cache/base.tar" \
    http://deb.debian.org/debian > "$cache/mmdebstrap.log" 2>&1 \
    || { say "mmdebstrap failed: $(tail -n 2 "$cache/mmdebstrap.log")"; exit 1; }
  ctr=$("${bah[@]}" from scratch)
  mnt=$("${bah[@]}" mount "$ctr")
  tar -C "$mnt" -xf "$cache/base.tar"
  "${bah[@]}" umount "$ctr" >/dev/null
  "${bah[@]}" commit -q "$ctr" "$base" >/dev/null
  "${bah[@]}" rm "$ctr" >/dev/null
fi

say "release tarball (make dist)"
rm -f dist/tapio-*-linux.tar.gz
scripts/package.sh >/dev/null
say "building $tag from $base"
"${bah[@]}" bud --isolation chroot --layers=false -q \
  --build-arg "BASE=$base" -f scripts/image/Containerfile -t "$tag" . >/dev/null

# The proof: the binaries run from the image's filesystem, with the
# libraries the image carries.
ctr=$("${bah[@]}" from -q "$tag")
trap '"${bah[@]}" rm "$ctr" >/dev/null 2>&1 || true' EXIT
mnt=$("${bah[@]}" mount "$ctr")
for b in tapio-agent tapio-controller tapio; do
  out=$(chroot "$mnt" "/usr/local/bin/$b" --help 2>&1) || { say "$b --help failed in the image: $out"; exit 1; }
  echo "$out" | grep -q "Usage: $b" || { say "$b --help: unexpected output: $out"; exit 1; }
  say "$b --help runs from the image"
done
"${bah[@]}" umount "$ctr" >/dev/null

# What the container runtime's default seccomp profile allows, measured:
# the reason the DaemonSet runs the agent Unconfined (docs/kubernetes.md).
# Information only; needs runc.
if command -v runc >/dev/null 2>&1; then
  seccomp=$("${bah[@]}" run --runtime runc --isolation oci --cap-add CAP_BPF --cap-add CAP_PERFMON \
    "$ctr" /usr/local/bin/tapio-agent check --human 2>/dev/null | grep -E '^bpf_syscall' | tr -s ' ' || true)
  echo "IMAGE: under the runtime default seccomp profile with CAP_BPF+CAP_PERFMON: ${seccomp:-no answer}"
fi
size=$("${bah[@]}" images --format '{{.Size}}' "$tag" | head -n1)
echo "IMAGE: $tag ($size) built and verified"
