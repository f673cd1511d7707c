#!/usr/bin/env bash
# Smoke test of the oxve test host VM: proves that the kernel features and
# services the storage tests need work inside it. Run on the host, it boots the
# VM through run.sh and runs itself there:
#
#   tests/hostvm/smoke.sh            # or: tests/hostvm/run.sh -- tests/hostvm/smoke.sh
#
# Each step prints PASS or FAIL with its duration (and its log when it fails);
# the last line is "N passed, N failed"; the exit code is non-zero if any step
# failed. Steps: lvm, lvmthin, nfs (v3 and v4.2), cifs, iscsi, btrfs, net.
# OXVE_SMOKE_VERBOSE=1 prints every step's log.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ ! -d /run/oxve-ctl ]; then  # on the host: boot the VM and run there
  repo=$(cd "$here/../.." && pwd)
  exec "$here/run.sh" --share "$repo" --env "OXVE_SMOKE_VERBOSE=${OXVE_SMOKE_VERBOSE:-0}" \
    -- "$here/smoke.sh" "$@"
fi

work=$(mktemp -d /var/tmp/smoke.XXXXXX)  # on the root disk, not the 2 GB of RAM
passed=0 failed=0

now() { echo "${EPOCHREALTIME/./}"; }  # microseconds, without a fork
step() { # step NAME FUNCTION: run FUNCTION with set -e, report PASS/FAIL
  local name=$1 fn=$2 log=$work/$1.log t0 rc
  t0=$(now)
  set +e
  (set -e; "$fn") >"$log" 2>&1
  rc=$?
  set -e
  local ms=$((($(now) - t0) / 1000))
  if [ "$rc" = 0 ]; then
    passed=$((passed + 1))
    printf 'PASS %-8s %6d ms\n' "$name" "$ms"
    [ "${OXVE_SMOKE_VERBOSE:-0}" = 0 ] || sed 's/^/    /' "$log"
  else
    failed=$((failed + 1))
    printf 'FAIL %-8s %6d ms (exit %d); log:\n' "$name" "$ms" "$rc"
    sed 's/^/    /' "$log"
  fi
}
wait_for() { # wait_for SECONDS COMMAND...: retry COMMAND every 0.2 s
  local end=$((SECONDS + $1)); shift
  until "$@"; do
    ((SECONDS < end)) || { echo "timed out waiting for: $*"; return 1; }
    sleep 0.2
  done
}
check_fs() { # check_fs MOUNTPOINT: write, sync and read back a file
  echo "written on $1" >"$1/smoke.txt"
  sync
  grep -qx "written on $1" "$1/smoke.txt"
  df -h "$1" | tail -n1
}

# Not `svc_work=$work . services.sh`: bash drops such a prefix assignment
# after the sourcing, and the functions need the variable later.
svc_work=$work
# shellcheck source=tests/hostvm/services.sh
. "$here/services.sh"

# --- LVM on a loop device -----------------------------------------------------
test_lvm() {
  svc_vg smokevg 512M
  lvcreate -y -L 8M -n plain smokevg
  mkfs.ext4 -q /dev/smokevg/plain
  mkdir -p /mnt/lvm
  mount /dev/smokevg/plain /mnt/lvm
  check_fs /mnt/lvm
  umount /mnt/lvm
  lvs smokevg
}

test_lvmthin() {
  svc_thinpool smokevg pool 64M
  lvcreate -y -V 256M --thin -n thin1 smokevg/pool
  mkfs.ext4 -q /dev/smokevg/thin1
  mkdir -p /mnt/thin
  mount /dev/smokevg/thin1 /mnt/thin
  check_fs /mnt/thin
  umount /mnt/thin
  lvcreate -y -s -n snap1 smokevg/thin1  # thin snapshot
  lvs -a -o lv_name,lv_attr,lv_size,pool_lv,data_percent smokevg
  vgchange -an smokevg
  vgremove -y smokevg
  losetup -j "$work/smokevg.img" | cut -d: -f1 | xargs -r losetup -d
}

# --- NFS server and client on loopback (no systemd) ---------------------------
test_nfs() {
  mkdir -p /mnt/nfs3 /mnt/nfs4
  svc_nfs /srv/nfs
  echo hello >/srv/nfs/hello
  rpcinfo -p 127.0.0.1
  showmount -e 127.0.0.1
  mount -t nfs -o vers=3 127.0.0.1:/srv/nfs /mnt/nfs3
  grep -qx hello /mnt/nfs3/hello
  check_fs /mnt/nfs3
  umount /mnt/nfs3
  mount -t nfs -o vers=4.2 127.0.0.1:/srv/nfs /mnt/nfs4
  grep -qx hello /mnt/nfs4/hello
  check_fs /mnt/nfs4
  umount /mnt/nfs4
}

# --- Samba server and CIFS client on loopback ---------------------------------
test_cifs() {
  mkdir -p /mnt/cifs
  svc_samba share /srv/smb smoke secret
  echo hello >/srv/smb/hello
  mount -t cifs //127.0.0.1/share /mnt/cifs -o username=smoke,password=secret,vers=3.0
  grep -qx hello /mnt/cifs/hello
  check_fs /mnt/cifs
  umount /mnt/cifs
}

# --- iSCSI: tgt target, open-iscsi initiator on loopback ----------------------
iqn=iqn.2024-01.org.oxve:smoke
test_iscsi() {
  svc_iscsi "$iqn" 64M
  iscsiadm -m discovery -t sendtargets -p 127.0.0.1
  iscsiadm -m node -T "$iqn" -p 127.0.0.1 --login
  link=/dev/disk/by-path/ip-127.0.0.1:3260-iscsi-$iqn-lun-1
  if [ -d /run/udev ]; then
    wait_for 30 test -b "$link"
    dev=$(readlink -f "$link")
    find /dev/disk/by-id -lname "*/${dev##*/}"
  else  # no udev: find the disk through sysfs
    wait_for 30 compgen -G "/sys/class/iscsi_session/session*/device/target*/*/block/*" >/dev/null
    dev=/dev/$(basename "$(compgen -G "/sys/class/iscsi_session/session*/device/target*/*/block/*" | head -n1)")
  fi
  echo "LUN is $dev"
  [ "$(blockdev --getsize64 "$dev")" = $((64 << 20)) ]
  mkfs.ext4 -q "$dev"
  mkdir -p /mnt/iscsi
  mount "$dev" /mnt/iscsi
  check_fs /mnt/iscsi
  umount /mnt/iscsi
  iscsiadm -m session
  iscsiadm -m node -T "$iqn" -p 127.0.0.1 --logout
}

# --- btrfs on a loop device ---------------------------------------------------
test_btrfs() {
  truncate -s 256M "$work/btrfs.img"
  dev=$(losetup --find --show "$work/btrfs.img")
  mkfs.btrfs -q "$dev"
  mkdir -p /mnt/btrfs
  mount "$dev" /mnt/btrfs
  btrfs subvolume create /mnt/btrfs/sub
  check_fs /mnt/btrfs/sub
  umount /mnt/btrfs
  losetup -d "$dev"
}

# --- network kinds the host lacks: VLAN, bond, bridge -------------------------
test_net() {
  ip link add smoke0 type dummy
  ip link add link smoke0 name smoke0.10 type vlan id 10
  ip link add smokebond0 type bond mode active-backup
  ip link add smoke1 type dummy
  ip link set smoke1 master smokebond0
  ip link add smokebr0 type bridge
  ip link set smoke0.10 master smokebr0
  ip -d link show smoke0.10 | grep -q "vlan protocol 802.1Q id 10"
  ip link show smokebr0
  cat /proc/net/bonding/smokebond0
  ip link del smokebr0
  ip link del smokebond0
  ip link del smoke0
  ip link del smoke1
}

echo "smoke: kernel $(uname -r), $(nproc) CPUs, $(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024)) MiB"
step lvm test_lvm
step lvmthin test_lvmthin
step nfs test_nfs
step cifs test_cifs
step iscsi test_iscsi
step btrfs test_btrfs
step net test_net
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
