#!/usr/bin/env bash
# Builds (once, cached) the VM system tests' small guest: Debian 12's kernel
# with a busybox initramfs that boots in seconds under TCG.
#
# Output: ${OXVE_GUEST_CACHE:-/var/cache/oxve-tests/qemu-guest}/<key>/ with
#   vmlinuz        Debian's kernel (linux-image-amd64's current version)
#   initrd.img     busybox (static) with the kernel modules for virtio
#                  disks and NICs, e1000, SATA/IDE CD-ROMs and ISO 9660,
#                  evdev + ACPI button (so an ACPI shutdown powers off),
#                  and Debian's QEMU guest agent (qemu-guest-agent's
#                  qemu-ga, fetched with apt-get download) with the shared
#                  libraries it links (taken from this host, which runs the
#                  same Debian release)
#   kernel.txt     the kernel version
# <key> is the first 16 hex digits of the sha256 of this script; other keys
# are removed. Prints the directory on stdout; everything else goes to
# stderr.
#
# The guest's init (below) prints `oxve-guest: booted` on the serial console
# and the screen, brings up every NIC with DHCP (udhcpc), mounts a CD-ROM
# labelled `cidata` or `config-2` at /cidata and prints its hostname line,
# answers the ACPI power button with poweroff, and keeps a root shell on the
# serial console (ttyS0) and on tty1. When the VM has a guest agent channel
# (`agent: 1`: the virtio port named org.qemu.guest_agent.0, found through
# /sys/class/virtio-ports since there is no udev), it starts qemu-ga on it
# and prints `oxve-guest: agent on /dev/vportNpM`. For the agent's commands
# the guest has /etc/os-release (ID=oxve-test-guest), /etc/passwd with root,
# a /sbin/shutdown that powers off (qemu-ga's guest-shutdown runs it), and a
# /usr/sbin/chpasswd (busybox has none) that records what qemu-ga's
# guest-set-user-password hands it in /run/chpasswd.last.
#
# Needs root for apt-get; installs busybox-static, cpio and kmod if missing.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${OXVE_GUEST_CACHE:-/var/cache/oxve-tests/qemu-guest}
key=$(sha256sum "$here/build-guest.sh" | cut -c1-16)
out=$cache/$key

say() { echo "qemu guest build: $*" >&2; }
die() { say "error: $*"; exit 1; }

if [ -e "$out/.complete" ]; then
  echo "$out"
  exit 0
fi
[ "$(id -u)" = 0 ] || die "must run as root (apt-get)"

need=()
[ -x /bin/busybox ] && /bin/busybox --list | grep -qx udhcpc || need+=(busybox-static)
command -v cpio >/dev/null || need+=(cpio)
command -v depmod >/dev/null || need+=(kmod)
if ((${#need[@]})); then
  say "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [ -e "$out/.complete" ]; then echo "$out"; exit 0; fi
started=$(date +%s)
work=$(mktemp -d "$cache/.build-XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- the kernel: the package linux-image-amd64 depends on --------------------
pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
if [ -z "$pkg" ]; then
  apt-get update -qq >&2
  pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
fi
[ -n "$pkg" ] || die "cannot find the package behind linux-image-amd64"
say "downloading $pkg"
(cd "$work" && apt-get download "$pkg" >&2 2>/dev/null) ||
  { apt-get update -qq >&2; (cd "$work" && apt-get download "$pkg" >&2); }
dpkg-deb -x "$work"/"$pkg"_*.deb "$work/k"
kver=${pkg#linux-image-}
[ -d "$work/k/lib/modules/$kver" ] || die "no modules for $kver in $pkg"
cp "$work/k/boot/vmlinuz-$kver" "$work/vmlinuz"
depmod -b "$work/k" "$kver"

# --- the QEMU guest agent: Debian's binary and the libraries it links ----------
say "downloading qemu-guest-agent"
(cd "$work" && apt-get download qemu-guest-agent >&2 2>/dev/null) ||
  { apt-get update -qq >&2; (cd "$work" && apt-get download qemu-guest-agent >&2); }
dpkg-deb -x "$work"/qemu-guest-agent_*.deb "$work/qga"
qga_bin=$work/qga/usr/sbin/qemu-ga
[ -x "$qga_bin" ] || die "no usr/sbin/qemu-ga in qemu-guest-agent"
linked=$(ldd "$qga_bin")
if grep -q "not found" <<<"$linked"; then
  deps=$(apt-cache depends qemu-guest-agent | awk '/ Depends: lib/{print $2}')
  say "installing the libraries qemu-ga links: $deps"
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $deps >&2
  linked=$(ldd "$qga_bin")
fi
if grep -q "not found" <<<"$linked"; then
  die "qemu-ga needs libraries this host lacks: $(grep "not found" <<<"$linked" | tr -s ' \t\n' ' ')"
fi

# --- the initramfs -------------------------------------------------------------
ird=$work/initrd
mkdir -p "$ird"/{bin,sbin,dev,proc,sys,run,tmp,etc,root,cidata,lib/modules,usr/sbin,usr/share/udhcpc}
cp "$qga_bin" "$ird/usr/sbin/qemu-ga"
# The libraries (`name => /path`) and the loader (`/path (0x...)`), at
# their paths on this host.
for lib in $(awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' <<<"$linked"); do
  mkdir -p "$ird$(dirname "$lib")"
  cp -L "$lib" "$ird$lib"
done
cp /bin/busybox "$ird/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ -e "$ird/bin/$applet" ] || ln -s busybox "$ird/bin/$applet"
done
# The modules in load order, dependencies first.
modules=(virtio_pci virtio_blk virtio_net virtio_scsi virtio_console virtio_balloon
  e1000 ata_piix ahci sd_mod sr_mod isofs evdev button)
: >"$ird/lib/modules/order"
for m in "${modules[@]}"; do
  modprobe -d "$work/k" -S "$kver" --show-depends "$m" | while read -r kind path _; do
    [ "$kind" = insmod ] || continue
    case $path in *.ko) ;; *) die "compressed module $path: extend this script" ;; esac
    name=${path##*/}
    grep -qx "$name" "$ird/lib/modules/order" && continue
    cp "$path" "$ird/lib/modules/$name"
    echo "$name" >>"$ird/lib/modules/order"
  done
done

cat >"$ird/usr/share/udhcpc/default.script" <<'EOF'
#!/bin/sh
# udhcpc's hook: apply the lease to the interface.
case $1 in
  deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
    echo "oxve-guest: $interface has $ip" > /dev/console
    ;;
esac
exit 0
EOF
chmod 755 "$ird/usr/share/udhcpc/default.script"

# busybox acpid runs /etc/acpi/<action>/<parameter> for an event.
mkdir -p "$ird/etc/acpi/PWRF" "$ird/var/log"
printf '#!/bin/sh\necho "oxve-guest: power button" > /dev/console\npoweroff\n' \
  >"$ird/etc/acpi/PWRF/00000080"
chmod 755 "$ird/etc/acpi/PWRF/00000080"
# What the guest agent's commands read and run.
cat >"$ird/etc/os-release" <<'EOF'
NAME="oxve test guest"
PRETTY_NAME="oxve test guest (busybox)"
ID=oxve-test-guest
VERSION_ID=1
EOF
echo 'root:x:0:0:root:/root:/bin/sh' >"$ird/etc/passwd"
echo 'root:x:0:' >"$ird/etc/group"
# qemu-ga's guest-shutdown runs `/sbin/shutdown -P +0 "..."`; busybox has
# poweroff (init then ends every process and powers off).
printf '#!/bin/sh\necho "oxve-guest: shutdown $*" > /dev/console\nexec poweroff\n' \
  >"$ird/sbin/shutdown"
# qemu-ga's guest-set-user-password feeds `user:password` to chpasswd
# (`-e` when crypted); busybox-static has no chpasswd, so record it.
printf '#!/bin/sh\n{ echo "args: $*"; cat; } > /run/chpasswd.last\n' >"$ird/usr/sbin/chpasswd"
chmod 755 "$ird/sbin/shutdown" "$ird/usr/sbin/chpasswd"
cat >"$ird/etc/inittab" <<'EOF'
::sysinit:/etc/rc
ttyS0::respawn:/bin/cttyhack /bin/sh -l
tty1::respawn:/bin/cttyhack /bin/sh -l
::shutdown:/bin/umount -a -r
EOF
cat >"$ird/etc/rc" <<'EOF'
#!/bin/sh
# oxve test guest: bring up what the tests look at, then say so.
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
while read -r m; do insmod "/lib/modules/$m" 2>/dev/null; done </lib/modules/order
hostname oxve-guest
ip link set lo up
for dev in /sys/class/net/*; do
  nic=${dev##*/}
  [ "$nic" = lo ] && continue
  ip link set "$nic" up
  udhcpc -b -q -t 20 -T 1 -i "$nic" -s /usr/share/udhcpc/default.script >/dev/null 2>&1 &
done
# A NoCloud (cidata) or ConfigDrive (config-2) seed: show its hostname.
for cd in /dev/sr* /dev/vd* /dev/sd*; do
  [ -b "$cd" ] || continue
  if mount -t iso9660 -o ro "$cd" /cidata 2>/dev/null; then
    for f in /cidata/meta-data /cidata/openstack/latest/meta_data.json; do
      [ -f "$f" ] && grep -i hostname "$f" | sed 's/^/oxve-guest: seed /' > /dev/console
    done
    break
  fi
done
acpid -l /var/log/acpid.log
# The QEMU guest agent, once its virtio port shows up (ports are announced
# by the host after the driver loads; none at all without `agent: 1`).
(
  for _ in $(seq 1 50); do
    for port in /sys/class/virtio-ports/*; do
      [ "$(cat "$port/name" 2>/dev/null)" = org.qemu.guest_agent.0 ] || continue
      dev=/dev/${port##*/}
      [ -c "$dev" ] || continue
      qemu-ga -m virtio-serial -p "$dev" -d -f /run/qemu-ga.pid -t /run -l /var/log/qemu-ga.log
      echo "oxve-guest: agent on $dev" > /dev/console
      exit 0
    done
    sleep 0.2
  done
) &
echo "oxve-guest: booted $(uname -r)" > /dev/console
echo "oxve-guest: booted $(uname -r)" > /dev/tty1 2>/dev/null
exit 0
EOF
chmod 755 "$ird/etc/rc"
ln -s /bin/busybox "$ird/init"
(cd "$ird" && find . | cpio --quiet -o -H newc | gzip -1) >"$work/initrd.img"
echo "$kver" >"$work/kernel.txt"

# --- publish -------------------------------------------------------------------
mkdir -p "$out.tmp"
mv "$work/vmlinuz" "$work/initrd.img" "$work/kernel.txt" "$out.tmp/"
rm -rf "$out"
mv "$out.tmp" "$out"
touch "$out/.complete"
for old in "$cache"/*; do
  [ "$old" = "$out" ] || rm -rf "$old"
done
say "built $out in $(($(date +%s) - started)) s"
echo "$out"
