#!/usr/bin/env bash
# Run the oxve system tests against a built daemon.
#
#   tests/system/run.sh [pytest args...]
#
# The Python packages live in a venv under /var/cache/oxve-tests/venv, rebuilt
# whenever requirements.txt changes (keyed by its sha256). OXVE_BIN selects the
# binary (default: target/release/oxve, else target/debug/oxve). Needs root.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
req="$here/requirements.txt"
venv="${OXVE_TEST_VENV:-/var/cache/oxve-tests/venv}"
python="${PYTHON:-python3}"

command -v "$python" >/dev/null || { echo "run.sh: $python not found (apt-get install python3)" >&2; exit 1; }
key="$(sha256sum "$req" | cut -d' ' -f1)"
if [[ ! -x "$venv/bin/python" || "$(cat "$venv/.requirements-sha256" 2>/dev/null)" != "$key" ]]; then
    "$python" -c 'import venv, ensurepip' 2>/dev/null || {
        echo "run.sh: '$python -m venv' is unavailable (on Debian: apt-get install python3-venv)" >&2
        exit 1
    }
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv" || {
        echo "run.sh: '$python -m venv $venv' failed (on Debian: apt-get install python3-venv)" >&2
        exit 1
    }
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
    echo "$key" > "$venv/.requirements-sha256"
fi

if [[ -n "${OXVE_BIN:-}" ]]; then
    export OXVE_BIN
elif [[ -x "$repo/target/release/oxve" ]]; then
    export OXVE_BIN="$repo/target/release/oxve"
elif [[ -x "$repo/target/debug/oxve" ]]; then
    export OXVE_BIN="$repo/target/debug/oxve"
else
    echo "run.sh: no oxve binary: build it (cargo build --release) or set OXVE_BIN" >&2
    exit 1
fi
if [[ -z "${OXVE_SHARED:-}" && -d "$repo/../shared" ]]; then
    export OXVE_SHARED="$(cd "$repo/../shared" && pwd)"
fi

cd "$repo"
# Default to the whole suite unless test paths (file, dir or file::test) are given.
target=(tests/system)
for a in "$@"; do
    if [[ "$a" != -* && -e "${a%%::*}" ]]; then target=(); break; fi
done
exec "$venv/bin/python" -m pytest -x -q -p no:cacheprovider "${target[@]}" "$@"
