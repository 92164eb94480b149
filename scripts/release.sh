#!/usr/bin/env bash
# The release binaries, in one place:
#   target/release/tapio-agent, target/release/tapio   built for size (the
#       agent's 1.0 MB budget: the `release` profile, opt-level "z");
#   target/controller/tapio-controller                 built for speed (the
#       `controller` profile: opt-level 3; docs/architecture.md says why).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo=${CARGO:-cargo}
$cargo build --release -p tapio-agent -p tapio-cli
$cargo build --profile controller -p tapio-controller
