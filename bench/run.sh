#!/usr/bin/env bash
# Builds the release daemon and the bench, runs every benchmark and rewrites
# BENCHMARKS.md. scripts/install-deps.sh installs what it needs: wrk and
# curl, btrfs-progs and qemu-img for the linked-clone benchmarks, lxc for
# the container benchmarks (their busybox template is built and cached by
# tests/lxc/build-templates.sh, which installs busybox-static if missing),
# qemu-system-x86 and qemu-utils for the VM benchmarks (their guest is built
# and cached by tests/qemu/build-guest.sh). Extra arguments go to
# oxve-bench (see `oxve-bench --help`), e.g.
#   bench/run.sh --idle-secs 10 --wrk-secs 3
#   bench/run.sh --no-storage --no-lxc --no-qemu
# A section skipped with --no-<part> keeps the figures BENCHMARKS.md had.
# Run as root (the daemon makes a network namespace; the btrfs clones need
# a loop mount).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

missing=()
for tool in wrk curl ip; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
  echo "bench/run.sh: missing ${missing[*]}: run scripts/install-deps.sh first" >&2
  exit 1
fi

target="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release -p oxve
cargo build --release -p oxve-bench
exec "$target/release/oxve-bench" --oxve "$target/release/oxve" --out BENCHMARKS.md "$@"
