#!/usr/bin/env bash
# Installs what is needed and runs every test: formatting, clippy, unit and
# golden tests, the generated-file checks, the system tests that drive a
# real daemon with proxmoxer, and the storage tests in the test host VM.
# Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
rustup component add rustfmt clippy >/dev/null 2>&1 || true
cargo fmt --all -- --check
cargo build --release --locked -p oxve
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked --workspace
OXVE_BIN="$PWD/target/release/oxve" tests/system/run.sh "$@"
# LVM, LVM-thin, NFS, CIFS and iSCSI: inside the test host VM (cached image).
OXVE_BIN="$PWD/target/release/oxve" tests/hostvm/storage-tests.sh
