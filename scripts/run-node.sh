#!/usr/bin/env bash
# Builds oxve and runs a development node in the foreground: state in
# ./dev-node, its own network namespace (oxve-dev), HTTPS on port 8006.
# On first start it creates admin@pve (Administrator on /) and prints the
# password. Stop it with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked -p oxve
root="${OXVE_ROOT:-$PWD/dev-node}"
mkdir -p "$root"
port="${OXVE_PORT:-8006}"
pwfile="$root/var/lib/oxve/initial-admin-password"
if [ -s "$pwfile" ]; then
  echo "log in as admin@pve with the password in $pwfile: $(cat "$pwfile")"
fi
echo "web/API: https://$(hostname -f 2>/dev/null || hostname):$port/  (self-signed certificate)"
echo "CLI: OXVE_ROOT=$root target/release/oxve pvesh get /version"
exec target/release/oxve daemon --root "$root" --port "$port" --netns "${OXVE_NETNS:-oxve-dev}" --create-admin
