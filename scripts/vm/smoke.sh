#!/usr/bin/env bash
# make smoke-vm: the release installed and run by systemd on a real
# Debian 12 host, in a VM.
#
# Builds once (cached in ~/.cache/tapio-kernels/smoke-vm, TAPIO_KERNEL_CACHE)
# a minimal Debian 12 (bookworm) disk image with systemd, node_exporter and
# Debian 12's kernel (the same package the kernel matrix pins), using
# mmdebstrap from Debian's archive. Each run copies the image, adds the
# release tarball from `make dist` and a oneshot unit that runs
# smoke-guest.sh, boots it in qemu (TCG), and reads the results back from
# the disk. Exit 0 when every check passed.
set -uo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
cache=${TAPIO_KERNEL_CACHE:-$HOME/.cache/tapio-kernels}/smoke-vm
out=$repo/target/smoke-vm
say() { printf 'smoke-vm: %s\n' "$*" >&2; }
t0=$(date +%s)
rm -rf "$out" && mkdir -p "$out" "$cache"
for tool in mmdebstrap mkfs.ext4 qemu-system-x86_64 mount; do
  command -v "$tool" >/dev/null || { say "missing $tool: run make setup"; exit 1; }
done
[ "$(id -u)" = 0 ] || { say "needs root (loop mounts)"; exit 1; }

# Debian 12's kernel: the bookworm line of the kernel matrix's pins.
read -r _ _ suite kpkg kver _ < <(awk '$3 == "bookworm"' scripts/kernels/kernels.conf)
[ -n "${kpkg:-}" ] || { say "no bookworm kernel in scripts/kernels/kernels.conf"; exit 1; }
base=$cache/bookworm-$kver.img

say "release tarball (make dist)"
tarball=$(scripts/package.sh 2>"$out/package.log" | tail -n1)
[ -f "$tarball" ] || { say "make dist failed: see $out/package.log"; exit 1; }

if [ ! -f "$base" ]; then
  say "building the Debian 12 image once (mmdebstrap, a few minutes)"
  rootfs=$cache/rootfs.tmp
  rm -rf "$rootfs" "$base.tmp"
  if ! mmdebstrap --variant=minbase --mode=root \
      --include="systemd,systemd-sysv,udev,dbus,kmod,iproute2,procps,curl,libelf1,zlib1g,prometheus-node-exporter,initramfs-tools,$kpkg=$kver" \
      --customize-hook='echo tapio-smoke > "$1/etc/hostname"' \
      --customize-hook='echo "/dev/vda / ext4 rw,errors=remount-ro 0 1" > "$1/etc/fstab"' \
      --customize-hook='chroot "$1" systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer systemd-timesyncd.service 2>/dev/null || true' \
      "$suite" "$rootfs" http://deb.debian.org/debian > "$out/mmdebstrap.log" 2>&1; then
    say "mmdebstrap failed: $(tail -n 3 "$out/mmdebstrap.log")"
    exit 1
  fi
  cp "$rootfs"/boot/vmlinuz-* "$cache/vmlinuz" && cp "$rootfs"/boot/initrd.img-* "$cache/initrd.img" \
    || { say "no kernel/initrd in the image"; exit 1; }
  mkfs.ext4 -q -F -L root -d "$rootfs" "$base.tmp" 3G || { say "mkfs.ext4 -d failed"; exit 1; }
  mv "$base.tmp" "$base" && rm -rf "$rootfs"
fi

say "preparing this run's disk"
img=$out/disk.img
cp --sparse=always "$base" "$img"
mnt=$(mktemp -d)
cleanup() { mountpoint -q "$mnt" && umount "$mnt"; rmdir "$mnt" 2>/dev/null; }
trap cleanup EXIT
mount -o loop "$img" "$mnt" || { say "cannot loop-mount the image"; exit 1; }
cp "$tarball" "$mnt/root/"
install -m 0755 scripts/vm/smoke-guest.sh "$mnt/usr/local/sbin/tapio-smoke"
cat > "$mnt/etc/systemd/system/tapio-smoke.service" <<'UNIT'
[Unit]
Description=Tapio smoke test (make smoke-vm)
After=multi-user.target prometheus-node-exporter.service
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/tapio-smoke
StandardOutput=journal+console
[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/tapio-smoke.service "$mnt/etc/systemd/system/multi-user.target.wants/tapio-smoke.service"
umount "$mnt"

say "booting Debian 12 ($kpkg $kver) under qemu (TCG)"
b0=$(date +%s)
timeout "${TAPIO_SMOKE_TIMEOUT:-900}" qemu-system-x86_64 -machine q35 -m 2048 -smp 2 \
  -display none -no-reboot -serial "file:$out/console.log" -nic none \
  -kernel "$cache/vmlinuz" -initrd "$cache/initrd.img" \
  -append "root=/dev/vda rw console=ttyS0 panic=-1" \
  -drive "file=$img,format=raw,if=virtio" </dev/null
rc=$?
[ "$rc" = 124 ] && say "the VM did not finish within ${TAPIO_SMOKE_TIMEOUT:-900} s"

mount -o loop,ro "$img" "$mnt" && cp -r "$mnt/var/log/tapio-smoke/." "$out/" 2>/dev/null
cleanup
rm -f "$img"
echo
if [ -s "$out/result" ]; then cat "$out/result"; else say "no results (see $out/console.log)"; fi
echo "smoke-vm: boot and checks $(( $(date +%s) - b0 )) s, total $(( $(date +%s) - t0 )) s"
if [ -s "$out/result" ] && grep -q '^DONE' "$out/result" && ! grep -q '^FAIL' "$out/result"; then
  echo "SMOKE-VM: PASS"
  exit 0
fi
echo "SMOKE-VM: FAIL (details under target/smoke-vm/)"
exit 1
