#!/usr/bin/env bash
# Fetches the pinned kernels of kernels.conf from Debian's archive into the
# cache (outside the work tree), verifies them and unpacks them, using a
# private apt sources list and state directory: the host's apt setup is
# never read or changed.
#
#   scripts/kernels/fetch.sh [NAME...]     (default: every kernel)
#
# Prints one line per kernel: "KERNEL <name> <vmlinuz path>" when ready,
# "KERNEL <name> UNAVAILABLE <why>" when it cannot be fetched. Exit 0 when
# every requested kernel is ready, 3 when some are unavailable.
# TAPIO_KERNEL_CACHE (default ~/.cache/tapio-kernels) is the cache.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${TAPIO_KERNEL_CACHE:-$HOME/.cache/tapio-kernels}
apt_dir=$cache/apt
mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$cache/debs" "$cache/unpacked"

keyring=/usr/share/keyrings/debian-archive-keyring.gpg
apt_opts=(-o "Dir::Etc::sourcelist=$apt_dir/sources.list" -o Dir::Etc::sourceparts=-
  -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir" -o Dir::State::status=/dev/null
  -o APT::Get::List-Cleanup=0 -o APT::Sandbox::User=root -o Debug::NoLocking=1)

updated=0
apt_update() {
  [ "$updated" = 1 ] && return 0
  : > "$apt_dir/sources.list"
  for suite in $(awk '!/^#/ && NF {print $3}' "$here/kernels.conf" | sort -u); do
    echo "deb [signed-by=$keyring] http://deb.debian.org/debian $suite main" >> "$apt_dir/sources.list"
  done
  apt-get "${apt_opts[@]}" -qq update >/dev/null 2>"$apt_dir/update.err" || {
    echo "fetch: apt-get update failed: $(tail -n1 "$apt_dir/update.err")" >&2
    return 1
  }
  updated=1
}

want=("$@")
status=0
while read -r name distro suite pkg version sha; do
  case "$name" in ''|'#'*) continue ;; esac
  if [ "${#want[@]}" -gt 0 ] && ! printf '%s\n' "${want[@]}" | grep -qx "$name"; then continue; fi
  deb="$cache/debs/${pkg}_${version}_amd64.deb"
  dest="$cache/unpacked/$name-$version"
  if [ ! -f "$dest/.ready" ]; then
    if [ ! -f "$deb" ] || ! echo "$sha  $deb" | sha256sum -c --quiet >/dev/null 2>&1; then
      rm -f "$deb"
      if ! apt_update; then
        echo "KERNEL $name UNAVAILABLE apt-get update failed (no access to Debian's archive?)"
        status=3; continue
      fi
      if ! (cd "$cache/debs" && apt-get "${apt_opts[@]}" -qq download "$pkg=$version" >/dev/null 2>"$apt_dir/download.err"); then
        echo "KERNEL $name UNAVAILABLE $pkg=$version: $(tail -n1 "$apt_dir/download.err") (pin a current version in scripts/kernels/kernels.conf)"
        status=3; continue
      fi
      # apt may name the file with an epoch-escaped version.
      got=$(ls "$cache/debs/${pkg}_"*"_amd64.deb" 2>/dev/null | head -n1)
      [ -n "$got" ] && [ "$got" != "$deb" ] && mv "$got" "$deb"
      if ! echo "$sha  $deb" | sha256sum -c --quiet >/dev/null 2>&1; then
        echo "KERNEL $name UNAVAILABLE $deb does not match the pinned sha256"
        rm -f "$deb"; status=3; continue
      fi
    fi
    rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
    dpkg-deb -x "$deb" "$dest.tmp" || { echo "KERNEL $name UNAVAILABLE cannot unpack $deb"; status=3; continue; }
    rm -rf "$dest" && mv "$dest.tmp" "$dest" && touch "$dest/.ready"
  fi
  vmlinuz=$(ls "$dest"/boot/vmlinuz-* 2>/dev/null | head -n1)
  if [ -z "$vmlinuz" ]; then
    echo "KERNEL $name UNAVAILABLE no vmlinuz in $dest"; status=3; continue
  fi
  echo "KERNEL $name $vmlinuz"
done < "$here/kernels.conf"
exit "$status"
