#!/bin/bash
# PID 1 of the oxve test host VM: installed as /sbin/oxve-hostvm-init by
# build.sh and started by its initrd, instead of systemd (slow under TCG).
#
# Sets up the basic mounts, loads the kernel modules the storage tests need,
# starts udevd, mounts the 9p shares run.sh passed, runs the command from the
# control share, writes its exit code to the control share and as a marker
# line on the console, and powers off.
#
# No `set -e`: if PID 1 exits the kernel panics (which, with panic=-1 and
# QEMU's -no-reboot, ends the VM, but without an exit code).

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TERM=dumb LANG=C.UTF-8
ctl=/run/oxve-ctl

log() { echo "[hostvm] $*"; }
halt_vm() {
  sync
  echo o >/proc/sysrq-trigger  # no systemd, so no poweroff(8); sysrq is immediate
  sleep 60
}
fail() {
  log "init error: $*"
  echo "OXVE-HOSTVM-EXIT=125"
  halt_vm
}
# Every exec costs tens of milliseconds under TCG: use builtins where cheap.
mounted() { # mounted DIR: is DIR a mount point? (reads /proc/mounts, no fork)
  local _src mp _rest
  [ -r /proc/self/mounts ] || return 1
  while read -r _src mp _rest; do [ "$mp" = "$1" ] && return 0; done </proc/self/mounts
  return 1
}
mnt() { # mnt TYPE SOURCE DIR [OPTIONS]: mount unless DIR already is a mount point
  mounted "$3" && return 0
  [ -d "$3" ] || mkdir -p "$3"
  mount -t "$1" ${4:+-o "$4"} "$2" "$3"
}

# The initrd (build.sh) has moved /dev onto the root already.
mnt proc proc /proc
mnt sysfs sys /sys
mnt devtmpfs dev /dev
mnt devpts devpts /dev/pts gid=5,mode=620,ptmxmode=666
mnt tmpfs shm /dev/shm mode=1777,nosuid,nodev
mnt tmpfs run /run mode=755,nosuid,nodev
mnt tmpfs tmp /tmp mode=1777,nosuid,nodev
mnt binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null
# The unified cgroup hierarchy, as systemd mounts it on a node: LXC puts
# containers below it.
mnt cgroup2 cgroup2 /sys/fs/cgroup nsdelegate
# AppArmor's interface, which LXC needs to load a container's profile.
mnt securityfs securityfs /sys/kernel/security
mkdir -p /run/lock /run/sendsigs.omit.d
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd

# The console is a serial line: no CR before each LF in our output.
stty -onlcr </dev/console 2>/dev/null
echo oxve-hostvm >/proc/sys/kernel/hostname
ip link set lo up

modprobe -a 9pnet_virtio 9p
mnt 9p oxvectl "$ctl" trans=virtio,version=9p2000.L || fail "cannot mount the control share"
# shellcheck source=/dev/null
[ -r "$ctl/config" ] && . "$ctl/config"

# Only what the kernel does not load on demand: loop and device-mapper (their
# control nodes), SCSI disks (iSCSI LUNs, when udev is off) and configfs (LIO).
# Filesystems (nfs, nfsd, cifs, btrfs), dm targets (thin-pool) and link kinds
# (vlan, bond, bridge, dummy) load when first used, iscsi_tcp by iscsiadm;
# `modprobe nfsd` before using /proc/fs/nfsd. Loading all of them up front
# would cost ~6 s of boot under TCG. OXVE_HOSTVM_MODULES adds more.
# shellcheck disable=SC2086
modprobe -a loop dm_mod sd_mod configfs ${OXVE_HOSTVM_MODULES:-}
mnt configfs configfs /sys/kernel/config
# Opening this node loads btrfs (as systemd-tmpfiles' static nodes would allow);
# without it mkfs.btrfs and `btrfs device scan` cannot register devices.
[ -e /dev/btrfs-control ] || mknod /dev/btrfs-control c 10 234
# The same for tun (QEMU opens /dev/net/tun for a VM's NICs).
[ -e /dev/net/tun ] || { mkdir -p /dev/net && mknod /dev/net/tun c 10 200; }

# udev gives /dev/disk/by-id (used for iSCSI LUNs) and LVM's device handling
# the same shape as on a real node. Coldplug only block devices: triggering
# everything makes udev load drivers for the emulated PC (floppy, IDE, kvm...),
# which costs seconds. Devices that appear later get their events as usual.
if [ "${OXVE_HOSTVM_UDEV:-1}" = 1 ]; then
  /lib/systemd/systemd-udevd --daemon --resolve-names=never >/run/udevd.log 2>&1
  udevadm trigger --action=add --subsystem-match=block --subsystem-match=misc
  udevadm settle --timeout=60 || log "udevadm settle timed out"
else
  # Without udev, LVM must create its /dev nodes and links itself.
  printf 'activation {\n\tudev_sync = 0\n\tudev_rules = 0\n}\n' >>/etc/lvm/lvmlocal.conf
fi

# Shares, in the order run.sh wrote them (parents before nested ones), each at
# its host path.
if [ -r "$ctl/shares" ]; then
  while IFS=$'\t' read -r tag path; do
    [ -n "$tag" ] || continue
    mnt 9p "$tag" "$path" "trans=virtio,version=9p2000.L,msize=512000,cache=mmap" ||
      fail "cannot mount share $tag at $path"
  done <"$ctl/shares"
fi

read -r up _ </proc/uptime
log "ready after ${up}s of uptime"
bash "$ctl/cmd" </dev/null
rc=$?
echo "$rc" >"$ctl/rc"
sync
echo "OXVE-HOSTVM-EXIT=$rc"
halt_vm
