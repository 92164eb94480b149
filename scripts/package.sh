#!/usr/bin/env bash
# Builds dist/tapio-<version>-<arch>-linux.tar.gz: the three binaries, the
# systemd units (for /usr/local), the example profiles, the JSON Schema and
# the docs. Used by `make dist` and the release workflow.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(awk -F'"' '/^version = / {print $2; exit}' Cargo.toml)
arch=$(uname -m)
name="tapio-$version-$arch-linux"
stage=$(mktemp -d)/$name
mkdir -p "$stage/bin" "$stage/systemd" "$stage/profiles" "$stage/docs" dist
scripts/release.sh
install -m 0755 target/release/tapio-agent target/controller/tapio-controller target/release/tapio "$stage/bin/"
for u in tapio-agent tapio-controller; do
  sed 's|@BINDIR@|/usr/local/bin|g' "scripts/systemd/$u.service" > "$stage/systemd/$u.service"
done
cp docs/profiles/*.yaml "$stage/profiles/"
cp -r docs/*.md docs/schema docs/kubernetes "$stage/docs/"
cp README.md "$stage/"
cat > "$stage/install.sh" <<'INSTALL'
#!/bin/sh
# Installs this release under /usr/local (PREFIX=... to change; the units
# name /usr/local/bin, so keep the default for them to work as shipped).
set -eu
cd "$(dirname "$0")"
PREFIX=${PREFIX:-/usr/local}
install -d "$PREFIX/bin" "$PREFIX/lib/systemd/system" "$PREFIX/share/tapio/profiles" "$PREFIX/share/doc/tapio"
install -m 0755 bin/tapio-agent bin/tapio-controller bin/tapio "$PREFIX/bin/"
# The agent's unit runs as this system user (with CAP_BPF + CAP_PERFMON).
getent passwd tapio >/dev/null || useradd --system --user-group --no-create-home \
  --home-dir /var/lib/tapio --shell /usr/sbin/nologin --comment "Tapio agent" tapio
install -m 0644 systemd/tapio-agent.service systemd/tapio-controller.service "$PREFIX/lib/systemd/system/"
install -m 0644 profiles/*.yaml "$PREFIX/share/tapio/profiles/"
cp -r docs/. "$PREFIX/share/doc/tapio/"
echo "installed under $PREFIX; next: systemctl daemon-reload && tapio-agent check --human && systemctl enable --now tapio-agent"
INSTALL
chmod 0755 "$stage/install.sh"
tar -C "$(dirname "$stage")" -czf "dist/$name.tar.gz" "$name"
(cd dist && sha256sum "$name.tar.gz" > "$name.tar.gz.sha256")
echo "dist/$name.tar.gz"
