#!/usr/bin/env bash
# Builds (once, cached) the oxve *test host VM*: a small Debian 12 image with
# the kernel features this host lacks (device-mapper/LVM, NFS, CIFS, iSCSI,
# VLAN, bonding), booted under QEMU/TCG by run.sh.
#
# Output: ${OXVE_HOSTVM_CACHE:-/var/cache/oxve-tests/hostvm}/<key>/ with
#   vmlinux, vmlinuz      the image's kernel, uncompressed (booted via PVH,
#                         faster) and as shipped (fallback)
#   initrd.img            our own small initrd (klibc; mounts the root)
#   rootfs.img            sparse raw ext4 root filesystem (read-only base;
#                         run.sh boots a qcow2 overlay of it)
#   packages.txt          what is installed in the image
# <key> is the first 16 hex digits of the sha256 of this script and of
# guest-init.sh, so editing either rebuilds; other keys are removed.
# Prints the image directory on stdout; everything else goes to stderr.
#
# Needs root (debootstrap, chroot). Installs debootstrap, qemu-system-x86 and
# e2fsprogs on the host if missing. Only http://deb.debian.org is contacted.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
inputs=("$here/build.sh" "$here/guest-init.sh")
cache=${OXVE_HOSTVM_CACHE:-/var/cache/oxve-tests/hostvm}
mirror=http://deb.debian.org/debian
suite=bookworm

key=$(cat "${inputs[@]}" | sha256sum | cut -c1-16)
out=$cache/$key

say() { echo "hostvm build: $*" >&2; }
die() { say "error: $*"; exit 1; }

# Fast path: built, and the host can boot it.
if [ -e "$out/.complete" ] && command -v qemu-system-x86_64 >/dev/null; then
  echo "$out"
  exit 0
fi

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap and chroot need it)"

# --- host tools -------------------------------------------------------------
apt_updated=0
apt_install() { # apt_install [apt options...] PACKAGE...
  export DEBIAN_FRONTEND=noninteractive
  if [ "$apt_updated" = 0 ]; then apt-get update -qq >&2; apt_updated=1; fi
  apt-get install -y -qq --no-install-recommends "$@" >&2
}

need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v flock >/dev/null || need+=(util-linux)
command -v unshare >/dev/null || need+=(util-linux)
((${#need[@]} == 0)) || { say "installing ${need[*]}"; apt_install "${need[@]}"; }

if ! command -v qemu-system-x86_64 >/dev/null || ! command -v qemu-img >/dev/null; then
  # This machine ships qemu-utils from bookworm-backports (10.x), which Breaks
  # bookworm's qemu-system-common (7.2); then take qemu-system-x86 from
  # backports too. The backports source lives only in a temporary apt source
  # directory passed with -o: /etc/apt is not changed.
  qver=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
  if [[ $qver == *bpo12* ]]; then
    say "installing qemu-system-x86 from $suite-backports (qemu-utils is $qver)"
    srcdir=$(mktemp -d)
    cp /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list "$srcdir/" 2>/dev/null || true
    cat >"$srcdir/oxve-hostvm-backports.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $suite-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    opts=(-o "Dir::Etc::SourceParts=$srcdir")
    DEBIAN_FRONTEND=noninteractive apt-get "${opts[@]}" update -qq >&2
    apt_updated=1
    apt_install "${opts[@]}" -t "$suite-backports" qemu-system-x86
    rm -rf "$srcdir"
  else
    say "installing qemu-system-x86 qemu-utils"
    apt_install qemu-system-x86 qemu-utils
  fi
fi

# --- lock, clean stale keys ---------------------------------------------------
mkdir -p "$cache"
exec 9>"$cache/.lock"
say "waiting for the build lock $cache/.lock"
flock 9
if [ -e "$out/.complete" ]; then  # built by another process meanwhile
  echo "$out"
  exit 0
fi
for d in "$cache"/*; do
  [ -d "$d" ] || continue
  case ${d##*/} in
    "$key" | debs) ;;
    *) say "removing stale $d"; rm -rf --one-file-system "$d" ;;
  esac
done
rm -rf "$out"

work=$cache/$key.tmp.$$
rm -rf "$work"
mkdir -p "$work" "$cache/debs"
cleanup() { rm -rf --one-file-system "$work"; }
trap cleanup EXIT
root=$work/rootfs
start=$SECONDS

# --- rootfs -------------------------------------------------------------------
# Runs a command chrooted in the rootfs, with /proc, /sys, /dev and the shared
# .deb cache mounted in a private mount namespace: the mounts vanish with the
# namespace, even if this script is killed.
in_chroot() {
  # shellcheck disable=SC2016 # expanded by the inner bash
  unshare --mount --propagation private -- /bin/bash -euc '
    r=$1 debs=$2; shift 2
    mount -t proc proc "$r/proc"
    mount -t sysfs sys "$r/sys"
    mount --rbind /dev "$r/dev"
    mount --bind "$debs" "$r/var/cache/apt/archives"
    exec chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
      HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
  ' in_chroot "$root" "$cache/debs" "$@"
}

say "debootstrap $suite (minbase) into $root"
# In its own mount namespace too: debootstrap mounts /proc and /sys in the
# target, which must not outlive an interrupted build.
nice -n 10 unshare --mount --propagation private -- \
  debootstrap --variant=minbase --cache-dir="$cache/debs" "$suite" "$root" "$mirror" >&2

cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb ${mirror}-security $suite-security main
deb $mirror $suite-backports main
EOF
printf 'APT::Install-Recommends "0";\nAPT::Install-Suggests "0";\n' \
  >"$root/etc/apt/apt.conf.d/90oxve-hostvm"
# No service may start inside the build chroot.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"

# The VM boots with an initrd of our own (below); keep the one initramfs-tools
# builds when the kernel is installed small and quick to make.
mkdir -p "$root/etc/initramfs-tools/conf.d"
printf 'MODULES=list\n' >"$root/etc/initramfs-tools/conf.d/oxve-hostvm.conf"

packages=(
  linux-image-amd64 kmod udev
  lvm2 thin-provisioning-tools
  nfs-common nfs-kernel-server rpcbind
  cifs-utils samba smbclient
  open-iscsi tgt
  btrfs-progs e2fsprogs util-linux mount procps iproute2
  python3 ca-certificates
  lxc apparmor
)
# VMs, with the QEMU the host runs: 10.0 from backports, installed as on the
# host (-t: what it pulls in comes from backports where that has a version,
# e.g. seabios; the packages above stay bookworm's). Debian's seabios and
# ipxe-qemu give the BIOS, VGA and NIC ROMs.
qemu_packages=(qemu-system-x86 qemu-utils)
say "installing ${packages[*]}"
in_chroot apt-get update -qq >&2
in_chroot nice -n 10 apt-get install -y -qq "${packages[@]}" >&2
say "installing ${qemu_packages[*]} from $suite-backports"
in_chroot nice -n 10 apt-get install -y -qq -t "$suite-backports" "${qemu_packages[@]}" >&2
in_chroot apt-get autoclean -qq >&2
# shellcheck disable=SC2016 # a dpkg-query format
in_chroot dpkg-query -W -f='${Package} ${Version}\n' >"$work/packages.txt"

# --- configuration ------------------------------------------------------------
rm -f "$root/usr/sbin/policy-rc.d"
echo oxve-hostvm >"$root/etc/hostname"
cat >"$root/etc/hosts" <<'EOF'
127.0.0.1 localhost
127.0.1.1 oxve-hostvm
::1 localhost ip6-localhost ip6-loopback
EOF
: >"$root/etc/fstab"
# open-iscsi generates the name on first service start, which never happens.
echo "InitiatorName=$(in_chroot iscsi-iname -p iqn.2024-01.org.oxve.hostvm)" \
  >"$root/etc/iscsi/initiatorname.iscsi"
install -m 755 "$here/guest-init.sh" "$root/sbin/oxve-hostvm-init"
# Unprivileged containers map their ids into root's subordinate range, as on
# a Proxmox VE node.
echo root:100000:65536 >"$root/etc/subuid"
echo root:100000:65536 >"$root/etc/subgid"

# --- kernel and initrd --------------------------------------------------------
kvers=("$root"/usr/lib/modules/*)
((${#kvers[@]} == 1)) || die "expected one kernel in the image, found ${kvers[*]##*/}"
kver=${kvers[0]##*/}
cp "$root/boot/vmlinuz-$kver" "$work/vmlinuz"
# Uncompressed vmlinux: QEMU boots it through its PVH entry point, which skips
# the firmware's kernel loading and the decompression (~4 s under TCG).
# Debian compresses the kernel with xz; vmlinuz stays the fallback.
in_chroot python3 -c '
import lzma, sys
d = open(sys.argv[1], "rb").read()
i = d.find(b"\xfd7zXZ\x00")
out = lzma.LZMADecompressor().decompress(d[i:]) if i >= 0 else b""
if out[:4] == b"\x7fELF" and b"Xen\x00" in out:
    open(sys.argv[2], "wb").write(out)
' "/boot/vmlinuz-$kver" /tmp/vmlinux || true
[ -s "$root/tmp/vmlinux" ] && mv "$root/tmp/vmlinux" "$work/vmlinux"

# Our own initrd instead of initramfs-tools' (whose udev and scripts take ~3 s
# under TCG): klibc's static tools load the modules needed to mount the root
# (virtio disk, ext4) and hand over to guest-init.sh. Uncompressed, as
# decompressing is slower under TCG than loading a few more MB.
ird=$root/tmp/initrd
mkdir -p "$ird"/{bin,dev,proc,root,lib}
cp "$root"/usr/lib/klibc/bin/{sh,insmod,mount,umount,mkdir,sleep,run-init} "$ird/bin/"
cp "$root"/usr/lib/klibc-*.so "$ird/lib/"
: >"$ird/modules"
while read -r kind path _; do  # "insmod /lib/modules/..." in load order
  [ "$kind" = insmod ] || continue
  case $path in *.ko) ;; *) die "compressed module $path: extend the initrd step" ;; esac
  [ -e "$ird/lib/${path##*/}" ] && continue  # a shared dependency, listed again
  cp "$root$path" "$ird/lib/"
  echo "/lib/${path##*/}" >>"$ird/modules"
done < <(in_chroot modprobe -a --show-depends --set-version="$kver" \
  virtio_pci virtio_blk crc32c_generic ext4)
cat >"$ird/init" <<'EOF'
#!/bin/sh
# oxve test host VM initrd (klibc): mount the root and start guest-init.sh.
mount -t devtmpfs devtmpfs /dev
while read -r m; do insmod "$m" || echo "initrd: insmod $m failed"; done </modules
n=0
while [ ! -b /dev/vda ] && [ $n -lt 300 ]; do sleep 0.1; n=$((n + 1)); done
mount -t ext4 -o rw,noinit_itable /dev/vda /root || { echo "initrd: cannot mount /dev/vda"; exit 1; }
mount -o move /dev /root/dev
exec run-init /root /sbin/oxve-hostvm-init
EOF
chmod 755 "$ird/init"
in_chroot /bin/sh -c 'cd /tmp/initrd && find . | cpio --quiet -o -H newc' >"$work/initrd.img"
rm -rf "$ird"

# Trim what tests never need: documentation, translations, apt lists and
# caches, and drivers for hardware the VM does not have (about 200 MB).
rm -rf "${root:?}"/usr/share/{doc,man,info,locale}/* "${root:?}"/var/lib/apt/lists/* \
  "${root:?}"/var/cache/apt/*.bin "${root:?}"/boot/* "${root:?}"/tmp/*
for m in "$root"/usr/lib/modules/*; do
  (cd "$m/kernel" && rm -rf sound drivers/{gpu,media,infiniband,staging,iio,bluetooth} \
    drivers/{usb,hid,input,mmc,mtd,video,isdn,comedi,hwmon,thunderbolt,net/wireless} \
    drivers/net/{ethernet,can,usb})
  in_chroot depmod "${m##*/}"
done
find "$root/var/log" -type f -delete
# oxve runs only qemu-system-x86_64: the i386 and microvm builds go (~36 MB).
rm -f "${root:?}"/usr/bin/qemu-system-{i386,x86_64-microvm}

# --- root filesystem image ----------------------------------------------------
# mkfs.ext4 -d copies the tree without a loop mount. 8 GiB apparent size for
# the tests' own files; the file is sparse and run.sh writes to an overlay.
say "creating rootfs.img"
truncate -s 8G "$work/rootfs.img"
nice -n 10 mkfs.ext4 -q -F -L oxve-root -d "$root" -E lazy_itable_init=1 \
  "$work/rootfs.img" >&2
rm -rf --one-file-system "$root"
chmod 444 "$work/rootfs.img"

touch "$work/.complete"
mv "$work" "$out"
trap - EXIT
say "built $out in $((SECONDS - start)) s ($(du -sh "$out" | cut -f1) on disk)"
echo "$out"
