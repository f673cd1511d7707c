#!/usr/bin/env bash
# The storage system tests that need kernel features this host lacks (LVM,
# LVM-thin, NFS, CIFS, iSCSI), run inside the test host VM:
#
#   tests/hostvm/storage-tests.sh [pytest args...]
#
# On the host it builds what the VM needs — the oxve binary (OXVE_BIN, default
# target/release/oxve), the oxve-storage `hostvm_plugins` test binary and the
# system tests' Python packages — boots the VM with those shared in, and runs
# itself there. In the VM it starts the services (services.sh) on loopback,
# runs the plugin tests (the Rust binary, straight against the plugins) and
# then tests/system/vm (proxmoxer and pvesm against a real daemon; containers
# from the busybox template of tests/lxc/build-templates.sh, built on the host
# and shared in). The exit code is non-zero if anything failed.
#
# pytest args that name paths (tests/system/vm/test_lxc_storage.py) replace
# the default tests/system/vm; OXVE_VM_PLUGIN_TESTS=0 skips the Rust plugin
# tests (both for development; CI runs everything).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

if [ ! -d /run/oxve-ctl ]; then  # on the host
  cd "$repo"
  bin=$(realpath -e "${OXVE_BIN:-target/release/oxve}") || {
    echo "storage-tests: no oxve binary (cargo build --release, or set OXVE_BIN)" >&2; exit 1; }
  plugin_test=${OXVE_PLUGIN_TEST:-}
  if [ -z "$plugin_test" ]; then
    plugin_test=$(cargo test --locked -p oxve-storage --test hostvm_plugins --no-run \
      --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "hostvm_plugins":
        print(m["executable"])')
  fi
  [ -x "$plugin_test" ] || { echo "storage-tests: no hostvm_plugins test binary" >&2; exit 1; }
  # Private copies of the binaries: the VM reads a shared file's pages over
  # 9p as it needs them, so a rebuild on the host while the VM runs changes
  # the binary under the processes the tests start from it, which then crash
  # (a VM's bridge hook segfaulting at a random address).
  stage=$(mktemp -d "${TMPDIR:-/tmp}/oxve-storage-tests.XXXXXX")
  trap 'rm -rf "$stage"' EXIT
  cp "$bin" "$stage/oxve"
  cp "$plugin_test" "$stage/hostvm_plugins"
  bin=$stage/oxve plugin_test=$stage/hostvm_plugins
  # The system tests' Python packages for the VM's own python3 (the host's
  # venv may belong to another Python build), keyed by requirements.txt.
  req=tests/system/requirements.txt
  pydir=/var/cache/oxve-tests/hostvm-py/$(sha256sum "$req" | cut -c1-16)
  if [ ! -d "$pydir" ]; then
    rm -rf "$pydir.tmp"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --target "$pydir.tmp" -r "$req"
    mv "$pydir.tmp" "$pydir"
  fi
  # The busybox container template (cached; the VM has no network to build it).
  templates=$(tests/lxc/build-templates.sh --only busybox | tail -n1)
  shares=(--share "$repo")
  for d in "$stage" "$pydir" "$templates"; do
    case $d in "$repo" | "$repo"/*) ;; *) shares+=(--share "$d") ;; esac
  done
  if [ -d "$repo/../shared" ]; then shares+=(--share "$(cd "$repo/../shared" && pwd)"); fi
  rc=0
  "$here/run.sh" "${shares[@]}" --cwd "$repo" \
    --env "OXVE_BIN=$bin" --env "OXVE_PLUGIN_TEST=$plugin_test" \
    --env "OXVE_PYDIR=$pydir" --env "CI=${CI:-}" \
    --env "OXVE_TEMPLATE_CACHE=$(dirname "$templates")" \
    --env "OXVE_VM_PLUGIN_TESTS=${OXVE_VM_PLUGIN_TESTS:-1}" \
    -- "$here/storage-tests.sh" "$@" || rc=$?
  exit "$rc"
fi

# --- in the VM ------------------------------------------------------------------
now() { echo "${EPOCHREALTIME/./}"; }
t0=$(now)
# shellcheck source=tests/hostvm/services.sh
. "$here/services.sh"
svc_vg oxvevg 1G
svc_thinpool oxvevg data 256M
svc_vg oxveapi 1G
svc_thinpool oxveapi data 256M
svc_nfs /srv/nfs-plugin
svc_nfs /srv/nfs-api
svc_samba plugin /srv/smb-plugin oxvesmb 'pl4in secret'
svc_samba api /srv/smb-api oxvesmb 'pl4in secret'
svc_iscsi iqn.2025-01.org.oxve:plugin 64M
svc_iscsi iqn.2025-01.org.oxve:api 64M
svc_vg oxvect 2G
svc_thinpool oxvect data 512M
svc_nfs /srv/nfs-ct
svc_vg oxveqm 2G
svc_thinpool oxveqm data 512M
echo "storage-tests: services up in $((($(now) - t0) / 1000)) ms"

export OXVE_HOSTVM_SERVICES=1
failed=0
if [ "${OXVE_VM_PLUGIN_TESTS:-1}" != 0 ]; then
  t1=$(now)
  OXVE_VM_VG=oxvevg OXVE_VM_THINPOOL=data \
    OXVE_VM_NFS_SERVER=127.0.0.1 OXVE_VM_NFS_EXPORT=/srv/nfs-plugin \
    OXVE_VM_CIFS_SHARE=plugin OXVE_VM_CIFS_DIR=/srv/smb-plugin \
    OXVE_VM_CIFS_USER=oxvesmb OXVE_VM_CIFS_PASSWORD='pl4in secret' \
    OXVE_VM_ISCSI_PORTAL=127.0.0.1 OXVE_VM_ISCSI_TARGET=iqn.2025-01.org.oxve:plugin \
    "$OXVE_PLUGIN_TEST" --test-threads=1 || failed=1
  echo "storage-tests: plugin tests took $((($(now) - t1) / 1000)) ms"
fi

# Paths among the pytest args replace the default directory.
target=(tests/system/vm)
for a in "$@"; do
  if [[ $a != -* && -e ${a%%::*} ]]; then target=(); break; fi
done
t2=$(now)
OXVE_VM_VG=oxveapi OXVE_VM_THINPOOL=data \
  OXVE_VM_CT_VG=oxvect OXVE_VM_CT_THINPOOL=data OXVE_VM_CT_NFS_EXPORT=/srv/nfs-ct \
  OXVE_VM_QM_VG=oxveqm OXVE_VM_QM_THINPOOL=data \
  OXVE_VM_NFS_SERVER=127.0.0.1 OXVE_VM_NFS_EXPORT=/srv/nfs-api \
  OXVE_VM_CIFS_SHARE=api OXVE_VM_CIFS_DIR=/srv/smb-api \
  OXVE_VM_CIFS_USER=oxvesmb OXVE_VM_CIFS_PASSWORD='pl4in secret' \
  OXVE_VM_ISCSI_PORTAL=127.0.0.1 OXVE_VM_ISCSI_TARGET=iqn.2025-01.org.oxve:api \
  PYTHONPATH=$OXVE_PYDIR python3 -m pytest -x -q -p no:cacheprovider -W ignore \
  "${target[@]}" "$@" || failed=1
echo "storage-tests: API tests took $((($(now) - t2) / 1000)) ms"
exit "$failed"
