#!/usr/bin/env bash
# Builds (once, cached) the LXC container templates the tests create
# containers from, in the shape of Proxmox VE's `pveam` templates: a tar of a
# root filesystem, member names starting with "./", numeric owners.
#
#   busybox-1.0_amd64.tar.{gz,xz,zst}   Debian's busybox-static as an
#       Alpine-looking root (container setup treats it as ostype alpine), with
#       busybox init, a shell on the console and the ttys, and a small
#       /etc/init.d/networking for /etc/network/interfaces. About 1 MB.
#   debian-12-standard_12.0-1_amd64.tar.zst   debootstrap --variant=minbase
#       bookworm with systemd-sysv, ifupdown, isc-dhcp-client, iproute2,
#       iputils-ping and netcat-openbsd. Takes minutes to build.
#
# Usage: build-templates.sh [--only busybox|debian]
#
# Output: ${OXVE_TEMPLATE_CACHE:-/var/cache/oxve-tests/templates}/<key>/ where
# <key> is the first 16 hex digits of the sha256 of this script, so editing it
# rebuilds; directories of other keys are removed. The template directory is
# the last line on stdout; everything else goes to stderr. Safe to run
# concurrently (flock); a finished template is renamed into place, so one that
# exists is complete.
#
# Needs root (ownership, debootstrap). Installs busybox-static, debootstrap,
# zstd and xz-utils on the host if missing. Only http://deb.debian.org is
# contacted, and only for the debian template.
set -euo pipefail

self=$(readlink -f "${BASH_SOURCE[0]}")
cache=${OXVE_TEMPLATE_CACHE:-/var/cache/oxve-tests/templates}
mirror=http://deb.debian.org/debian
suite=bookworm

busybox_base=busybox-1.0_amd64
debian_name=debian-12-standard_12.0-1_amd64.tar.zst

say() { echo "templates build: $*" >&2; }
die() { say "error: $*"; exit 1; }

wanted=(busybox debian)
while (($#)); do
  case $1 in
    --only)
      [ $# -ge 2 ] || die "--only needs busybox or debian"
      case $2 in busybox | debian) wanted=("$2") ;; *) die "unknown template '$2'" ;; esac
      shift 2 ;;
    -h | --help) sed -n '2,/^set -e/p' "$self" | sed '$d; s/^# \{0,1\}//' >&2; exit 0 ;;
    *) die "unknown argument '$1' (usage: build-templates.sh [--only busybox|debian])" ;;
  esac
done

key=$(sha256sum "$self" | cut -c1-16)
out=$cache/$key

files_of() { # files_of TEMPLATE: the archives that make it complete
  case $1 in
    busybox) echo "$busybox_base.tar.gz $busybox_base.tar.xz $busybox_base.tar.zst" ;;
    debian) echo "$debian_name" ;;
  esac
}
all_built() {
  local t f
  for t in "${wanted[@]}"; do
    for f in $(files_of "$t"); do [ -s "$out/$f" ] || return 1; done
  done
}

# Fast path: everything asked for is there.
if all_built; then
  echo "$out"
  exit 0
fi

[ "$(id -u)" = 0 ] || die "must run as root (file ownership and debootstrap need it)"

# --- host tools ---------------------------------------------------------------
apt_install() { # apt_install PACKAGE...; runs apt-get update once if needed
  export DEBIAN_FRONTEND=noninteractive
  say "installing $*"
  apt-get install -y -qq --no-install-recommends "$@" >&2 && return 0
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "$@" >&2
}
need=()
[ -x /bin/busybox ] && dpkg-query -W busybox-static >/dev/null 2>&1 || need+=(busybox-static)
command -v zstd >/dev/null || need+=(zstd)
command -v xz >/dev/null || need+=(xz-utils)
command -v flock >/dev/null || need+=(util-linux)
[[ " ${wanted[*]} " != *" debian "* ]] || command -v debootstrap >/dev/null || need+=(debootstrap)
((${#need[@]} == 0)) || apt_install "${need[@]}"

# --- lock, clean stale keys ---------------------------------------------------
mkdir -p "$cache"
exec 9>"$cache/.lock"
say "waiting for the build lock $cache/.lock"
flock 9
if all_built; then # built by another process meanwhile
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
mkdir -p "$out"

work=$(mktemp -d "$cache/$key.tmp.XXXXXX")
cleanup() { rm -rf --one-file-system "$work"; }
trap cleanup EXIT

# pack ROOT: the tar stream of a root filesystem as pveam templates have it.
pack() {
  tar --numeric-owner --sort=name --xattrs --xattrs-include='security.capability' \
    -C "$1" -cf - .
}

# --- busybox ------------------------------------------------------------------
build_busybox() {
  local root=$work/busybox f path name
  say "building $busybox_base from busybox-static $(dpkg-query -W -f='${Version}' busybox-static)"
  mkdir -p "$root"
  (
    cd "$root"
    mkdir -p bin sbin usr/bin usr/sbin etc/init.d etc/network etc/udhcpc \
      dev proc sys run mnt home var/log var/lib var/cache var/empty root tmp var/tmp
    chmod 700 root
    chmod 1777 tmp var/tmp
    ln -s ../run var/run
    install -m 755 /bin/busybox bin/busybox
  )
  # Every applet at its usual place (busybox --list-full), as a relative
  # symlink. Not the package managers (they would make the root look like
  # something it is not) and not getty (a stand-in below).
  while read -r path; do
    name=${path##*/}
    case $name in busybox | linuxrc | dpkg | dpkg-deb | rpm | rpm2cpio | getty) continue ;; esac
    [ -e "$root/$path" ] && continue
    case $path in
      bin/*) ln -s busybox "$root/$path" ;;
      *) ln -s "$(dirname "$path" | sed 's|[^/][^/]*|..|g')/bin/busybox" "$root/$path" ;;
    esac
  done < <(/bin/busybox --list-full)
  for f in sh ash ls cat echo ip ifconfig route ping nc udhcpc sleep mount umount hostname \
    init poweroff reboot halt sed grep ps kill id wc head tail dd mkdir rm touch chmod \
    chown ln printf env ipcalc; do
    [ -L "$root/bin/$f" ] || [ -L "$root/sbin/$f" ] || [ -L "$root/usr/bin/$f" ] ||
      [ -L "$root/usr/sbin/$f" ] || die "busybox-static has no applet '$f'"
  done

  # Container setup sees Alpine (os-release ID, /etc/alpine-release) and so
  # writes /etc/network/interfaces with "address a.b.c.d/nn" lines and
  # "ttyN::respawn:/sbin/getty 38400 ttyN" into /etc/inittab.
  echo 3.22.0 >"$root/etc/alpine-release"
  cat >"$root/etc/os-release" <<'EOF'
NAME="Alpine Linux"
ID=alpine
VERSION_ID=3.22.0
PRETTY_NAME="oxve test template (busybox, Alpine-compatible)"
HOME_URL="https://alpinelinux.org/"
EOF
  cat >"$root/etc/inittab" <<'EOF'
# oxve busybox test template: busybox init.
::sysinit:/bin/sh -c '[ -e /proc/self ] || mount -t proc proc /proc; [ -e /sys/kernel ] || mount -t sysfs sysfs /sys; mount -t tmpfs -o nosuid,nodev,mode=755 tmpfs /run; ip link set lo up'
::sysinit:/bin/sh -c '[ ! -x /etc/init.d/rcS ] || exec /etc/init.d/rcS'

# A root shell, no login, on the console and on the ttys.
console::respawn:-/bin/sh
tty1::respawn:/sbin/getty 38400 tty1
tty2::respawn:/sbin/getty 38400 tty2

# SIGPWR and SIGUSR1 (halt), SIGUSR2 (poweroff) stop the container; SIGTERM
# and SIGINT (lxc-stop --reboot) restart it.
::ctrlaltdel:/sbin/reboot
::shutdown:/etc/init.d/networking stop
::shutdown:/bin/sync
EOF
  cat >"$root/sbin/getty" <<'EOF'
#!/bin/sh
# oxve test template: no logins. Container setup writes "/sbin/getty 38400
# ttyN" lines into /etc/inittab; this stand-in starts a root shell on that
# terminal (init has made it the controlling one) instead of a login prompt.
exec /bin/sh -l
EOF
  cat >"$root/etc/init.d/rcS" <<'EOF'
#!/bin/sh
# Run once by init at boot.
[ -z "$(cat /etc/hostname 2>/dev/null)" ] || hostname -F /etc/hostname
/etc/init.d/networking start
EOF
  cat >"$root/etc/init.d/networking" <<'EOF'
#!/bin/sh
# networking start|stop: configures the "auto" interfaces of
# /etc/network/interfaces with ip(8), in the subset container setup writes:
#   iface IF inet static     address A.B.C.D/NN (or address + netmask), gateway
#   iface IF inet dhcp       udhcpc in the background
#   iface IF inet6 static    address X/NN (or address + netmask NN), gateway
#   iface IF inet[6] manual|auto|loopback: the link is only set up
#   pre-up / up / post-up / down / pre-down / post-down: run with sh -c
# (busybox's own ifup has no "address A/NN", so it is not used.)
set -f # words of the file are not file name patterns
conf=/etc/network/interfaces
action=${1:-start}
case $action in start | stop) ;; *) echo "usage: $0 start|stop" >&2; exit 1 ;; esac
[ -r "$conf" ] || exit 0

autos=" $(sed -n 's/^[[:space:]]*auto[[:space:]]\{1,\}//p' "$conf" | tr '\n\t' '  ') "
nl='
'

run_hooks() { # run_hooks PHASE...
  local phase line
  for phase in "$@"; do
    printf '%s\n' "$hooks" | while IFS= read -r line; do
      case $line in "$phase "*) sh -c "${line#* }" || echo "networking: $iface: '$line' failed" >&2 ;; esac
    done
  done
}

stanza_done() {
  [ -n "$iface" ] || return 0
  case $autos in *" $iface "*) ;; *) return 0 ;; esac
  local a=$address
  if [ -n "$netmask" ]; then
    case $a in */*) ;; *)
      case $netmask in *.*) a="$a/$(ipcalc -p "$address" "$netmask" | cut -d= -f2)" ;; *) a="$a/$netmask" ;; esac ;;
    esac
  fi
  if [ "$action" = stop ]; then
    run_hooks down pre-down
    [ -f "/run/udhcpc.$iface.pid" ] && kill "$(cat "/run/udhcpc.$iface.pid")" 2>/dev/null
    run_hooks post-down
    return 0
  fi
  run_hooks pre-up
  ip link set "$iface" up || { echo "networking: no interface $iface" >&2; return 0; }
  case $family/$method in
    inet/static)
      ip -4 addr add "$a" dev "$iface"
      [ -z "$gateway" ] || ip -4 route add default via "$gateway" dev "$iface" ;;
    inet6/static)
      ip -6 addr add "$a" dev "$iface"
      [ -z "$gateway" ] || ip -6 route add default via "$gateway" dev "$iface" ;;
    inet/dhcp)
      udhcpc -f -R -i "$iface" -p "/run/udhcpc.$iface.pid" -s /etc/udhcpc/default.script \
        -x "hostname:$(hostname)" >"/run/udhcpc.$iface.log" 2>&1 </dev/null & ;;
  esac
  run_hooks up post-up
}

iface=
while IFS= read -r line || [ -n "$line" ]; do
  set -- $line
  case $1 in
    '' | '#'*) continue ;;
    iface)
      stanza_done
      iface=$2 family=$3 method=$4 address= netmask= gateway= hooks= ;;
    auto | allow-* | source* | mapping)
      stanza_done
      iface= ;;
    address | netmask | gateway) [ -z "$iface" ] || eval "$1=\$2" ;;
    pre-up | up | post-up | down | pre-down | post-down)
      [ -z "$iface" ] || hooks="$hooks$1 ${line#*"$1"}$nl" ;;
  esac
done <"$conf"
stanza_done
exit 0
EOF
  cat >"$root/etc/udhcpc/default.script" <<'EOF'
#!/bin/sh
# udhcpc event script: applies a lease with ip(8), writes /etc/resolv.conf.
case $1 in
  deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up ;;
  bound | renew)
    prefix=${mask:-$(ipcalc -p "$ip" "$subnet" | cut -d= -f2)}
    [ "$1" = renew ] || ip -4 addr flush dev "$interface"
    ip -4 addr replace "$ip/$prefix" dev "$interface"
    if [ -n "$router" ]; then
      while ip -4 route del default dev "$interface" 2>/dev/null; do :; done
      for r in $router; do ip -4 route add default via "$r" dev "$interface" && break; done
    fi
    if [ -n "$dns" ]; then
      { [ -z "$domain" ] || echo "search $domain"
        for d in $dns; do echo "nameserver $d"; done; } >/etc/resolv.conf
    fi ;;
esac
exit 0
EOF
  chmod 755 "$root/sbin/getty" "$root/etc/init.d/rcS" "$root/etc/init.d/networking" \
    "$root/etc/udhcpc/default.script"

  cat >"$root/etc/network/interfaces" <<'EOF'
auto lo
iface lo inet loopback
EOF
  cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/:/sbin/nologin
EOF
  cat >"$root/etc/group" <<'EOF'
root:x:0:
tty:x:5:
nogroup:x:65534:
EOF
  # Locked root password; container creation sets one if asked to.
  echo 'root:!:19000:0:99999:7:::' >"$root/etc/shadow"
  echo 'nobody:!:19000:0:99999:7:::' >>"$root/etc/shadow"
  chmod 640 "$root/etc/shadow"
  echo busybox >"$root/etc/hostname"
  cat >"$root/etc/hosts" <<'EOF'
127.0.0.1 localhost
::1 localhost ip6-localhost ip6-loopback
EOF
  cat >"$root/etc/profile" <<'EOF'
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PS1='\h:\w\$ '
EOF
  printf '/bin/sh\n/bin/ash\n' >"$root/etc/shells"
  : >"$root/etc/fstab"
  : >"$root/etc/resolv.conf"

  pack "$root" >"$work/$busybox_base.tar"
  gzip -9n <"$work/$busybox_base.tar" >"$work/$busybox_base.tar.gz"
  xz -9 -T1 <"$work/$busybox_base.tar" >"$work/$busybox_base.tar.xz"
  zstd -q -19 <"$work/$busybox_base.tar" >"$work/$busybox_base.tar.zst"
  for f in tar.gz tar.xz tar.zst; do mv "$work/$busybox_base.$f" "$out/"; done
  rm -rf --one-file-system "$root" "$work/$busybox_base.tar"
  say "built $busybox_base ($(du -b "$out/$busybox_base.tar.gz" | cut -f1) bytes gzipped)"
}

# --- debian -------------------------------------------------------------------
build_debian() {
  local root=$work/debian start=$SECONDS
  mkdir -p "$cache/debs"
  say "debootstrap $suite (minbase) into $root"
  # In a private mount namespace: debootstrap mounts /proc and /sys in the
  # target, which must not outlive an interrupted build.
  nice -n 10 unshare --mount --propagation private -- \
    debootstrap --variant=minbase --cache-dir="$cache/debs" \
    --include=systemd-sysv,ifupdown,isc-dhcp-client,iproute2,iputils-ping,netcat-openbsd \
    "$suite" "$root" "$mirror" >&2

  cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb ${mirror}-security $suite-security main
EOF
  echo localhost >"$root/etc/hostname"
  cat >"$root/etc/hosts" <<'EOF'
127.0.0.1 localhost
::1 localhost ip6-localhost ip6-loopback
EOF
  cat >"$root/etc/network/interfaces" <<'EOF'
auto lo
iface lo inet loopback

source /etc/network/interfaces.d/*
EOF
  : >"$root/etc/fstab"
  : >"$root/etc/resolv.conf"
  # Each container gets its own machine id on first boot.
  : >"$root/etc/machine-id"
  rm -f "$root/var/lib/dbus/machine-id"
  # Trim what containers in tests never need.
  rm -rf "${root:?}"/var/lib/apt/lists/* "${root:?}"/var/cache/apt/*.bin \
    "${root:?}"/var/cache/apt/archives/*.deb "${root:?}"/var/cache/debconf/*-old \
    "${root:?}"/usr/share/{doc,man,info,locale}/* "${root:?}"/tmp/* "${root:?}"/var/tmp/*
  find "$root/var/log" -type f -delete

  say "packing $debian_name"
  pack "$root" | zstd -q -T0 -12 >"$work/$debian_name"
  mv "$work/$debian_name" "$out/"
  rm -rf --one-file-system "$root"
  say "built $debian_name in $((SECONDS - start)) s ($(du -b "$out/$debian_name" | cut -f1) bytes)"
}

for t in "${wanted[@]}"; do
  done_already=1
  for f in $(files_of "$t"); do [ -s "$out/$f" ] || done_already=0; done
  [ "$done_already" = 1 ] || "build_$t"
done

echo "$out"
