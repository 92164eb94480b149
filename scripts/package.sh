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
cargo build --release -p tapio-agent -p tapio-controller -p tapio-cli
install -m 0755 target/release/tapio-agent target/release/tapio-controller target/release/tapio "$stage/bin/"
for u in tapio-agent tapio-controller; do
  sed 's|@BINDIR@|/usr/local/bin|g' "scripts/systemd/$u.service" > "$stage/systemd/$u.service"
done
cp docs/profiles/*.yaml "$stage/profiles/"
cp -r docs/*.md docs/schema docs/kubernetes "$stage/docs/"
cp README.md "$stage/"
tar -C "$(dirname "$stage")" -czf "dist/$name.tar.gz" "$name"
(cd dist && sha256sum "$name.tar.gz" > "$name.tar.gz.sha256")
echo "dist/$name.tar.gz"
