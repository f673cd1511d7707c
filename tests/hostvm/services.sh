# Storage services on the test host VM's loopback, for smoke.sh and
# storage-tests.sh. Source it inside the VM; every function is idempotent
# within one boot and fails (returns non-zero) with a message on stderr.
#
#   svc_vg VG SIZE        a volume group on a loop device in $svc_work
#   svc_thinpool VG POOL SIZE
#   svc_nfs DIR           export DIR to 127.0.0.1 (NFS v3 and v4)
#   svc_samba SHARE DIR USER PASSWORD
#   svc_iscsi IQN SIZE    a tgt target with one LUN of SIZE on a file
#
# shellcheck shell=bash

svc_work=${svc_work:-/var/tmp/oxve-services}  # on the root disk, not in RAM
mkdir -p "$svc_work"

svc_wait() { # svc_wait SECONDS COMMAND...: retry COMMAND every 0.2 s
  local end=$((SECONDS + $1)); shift
  until "$@"; do
    ((SECONDS < end)) || { echo "timed out waiting for: $*" >&2; return 1; }
    sleep 0.2
  done
}

svc_vg() {
  local vg=$1 size=$2 dev
  vgs "$vg" >/dev/null 2>&1 && return 0
  truncate -s "$size" "$svc_work/$vg.img"
  dev=$(losetup --find --show "$svc_work/$vg.img")
  pvcreate -q -y "$dev"
  vgcreate -q "$vg" "$dev"
}

svc_thinpool() {
  local vg=$1 pool=$2 size=$3
  lvs "$vg/$pool" >/dev/null 2>&1 && return 0
  lvcreate -q -y --type thin-pool -L "$size" -n "$pool" "$vg"
}

svc_nfs() {
  local dir=$1
  mkdir -p "$dir" /run/rpcbind /var/lib/nfs/rpc_pipefs
  grep -qs "^$dir " /etc/exports && return 0
  # fsid: distinct per export (the line count grows with each one).
  local n=0
  [ -e /etc/exports ] && n=$(wc -l </etc/exports)
  echo "$dir 127.0.0.1(rw,no_root_squash,no_subtree_check,fsid=$((n + 1)))" >>/etc/exports
  modprobe nfsd
  mountpoint -q /proc/fs/nfsd || mount -t nfsd nfsd /proc/fs/nfsd
  mountpoint -q /var/lib/nfs/rpc_pipefs || mount -t rpc_pipefs sunrpc /var/lib/nfs/rpc_pipefs
  if ! pgrep -x rpc.mountd >/dev/null; then
    # NFSv4 refuses new opens for a grace period after nfsd starts (90 s by
    # default); the minimum is 10 s.
    echo 10 >/proc/fs/nfsd/nfsv4gracetime
    echo 10 >/proc/fs/nfsd/nfsv4leasetime
    rpcbind -w
    rpc.statd --no-notify
    exportfs -ra
    rpc.mountd
    rpc.nfsd 4
  else
    exportfs -ra
  fi
  svc_wait 30 showmount -e 127.0.0.1 >/dev/null
}

svc_samba() {
  local share=$1 dir=$2 user=$3 password=$4
  mkdir -p "$dir" /var/log/samba /run/samba
  id "$user" >/dev/null 2>&1 || useradd -M -s /usr/sbin/nologin "$user"
  chown "$user" "$dir"
  if [ ! -e "$svc_work/smb.conf.done" ]; then
    cat >/etc/samba/smb.conf <<'EOF'
[global]
  server role = standalone server
  interfaces = lo
  bind interfaces only = yes
  smb ports = 445
  disable netbios = yes
  map to guest = never
  load printers = no
  printcap name = /dev/null
  disable spoolss = yes
  log file = /var/log/samba/log.%m
EOF
    touch "$svc_work/smb.conf.done"
  fi
  grep -q "^\[$share\]" /etc/samba/smb.conf ||
    printf '[%s]\n  path = %s\n  read only = no\n  valid users = %s\n  force user = %s\n' \
      "$share" "$dir" "$user" "$user" >>/etc/samba/smb.conf
  printf '%s\n%s\n' "$password" "$password" | smbpasswd -a -s "$user" >/dev/null
  if pgrep -x smbd >/dev/null; then
    smbcontrol smbd reload-config
  else
    smbd --daemon
  fi
  svc_wait 60 smbclient -U "$user%$password" -L //127.0.0.1 -m SMB3 >/dev/null 2>&1
}

svc_iscsi() {
  local iqn=$1 size=$2 tid
  pgrep -x tgtd >/dev/null || tgtd
  svc_wait 30 tgtadm --lld iscsi --op show --mode target >/dev/null
  tgtadm --lld iscsi --op show --mode target | grep -q "$iqn\$" && return 0
  tid=$(tgtadm --lld iscsi --op show --mode target | grep -c '^Target' || true)
  tid=$((tid + 1))
  truncate -s "$size" "$svc_work/lun-$tid.img"
  tgtadm --lld iscsi --op new --mode target --tid "$tid" -T "$iqn"
  tgtadm --lld iscsi --op new --mode logicalunit --tid "$tid" --lun 1 -b "$svc_work/lun-$tid.img"
  tgtadm --lld iscsi --op bind --mode target --tid "$tid" -I ALL
  pgrep -x iscsid >/dev/null || iscsid
}
