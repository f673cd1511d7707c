#!/usr/bin/env bash
# Installs what building, running and testing oxve needs on Debian 12.
# Idempotent: installs only what is missing.
set -euo pipefail

packages=(
  gcc libc6-dev pkg-config make    # cc for C-building crates (SQLite, ring)
  libpam0g-dev                     # real PAM authentication
  iproute2                         # ip netns for --netns
  ca-certificates curl
  python3 python3-venv python3-pip # proxmoxer system tests
  openssl                          # certificate checks in tests
  wrk                              # benchmarks
  qemu-utils                       # qemu-img: qcow2/vmdk images on file storages
  btrfs-progs                      # the btrfs storage plugin
  xz-utils zstd bzip2 gzip         # download-url decompression
  busybox-static                   # minimal container root file systems in tests
  genisoimage                      # cloud-init seed ISOs of VMs
  ovmf                             # UEFI firmware and EFI variables templates of VMs
  swtpm swtpm-tools                # TPM state disks of VMs
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# QEMU for virtual machines and their tests. A host whose qemu-utils comes
# from bookworm-backports (10.x) cannot take bookworm's qemu-system-x86
# (7.2, it Breaks the newer qemu-utils): then qemu-system-x86 comes from
# backports too, through an apt source passed with -o for this install
# only (/etc/apt is not changed).
if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  qver=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
  if [[ $qver == *bpo12* ]]; then
    echo "installing qemu-system-x86 from bookworm-backports (qemu-utils is $qver)"
    srcdir=$(mktemp -d)
    cp /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list "$srcdir/" 2>/dev/null || true
    cat >"$srcdir/oxve-backports.sources" <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    opts=(-o "Dir::Etc::SourceParts=$srcdir")
    apt-get "${opts[@]}" update -qq
    apt-get "${opts[@]}" install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86
    rm -rf "$srcdir"
  else
    echo "installing Debian packages: qemu-system-x86"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends qemu-system-x86
  fi
fi

# The tools behind `pvesm scan` and /nodes/{node}/disks: showmount,
# smbclient, vgs/lvs, smartctl, udevadm. Their packages also bring daemons
# (rpcbind, statd, dmeventd, smartd, udevd) that must not start on a build
# host: a policy-rc.d that refuses every start is in place while they install.
# lxc runs containers; its lxc-net service (a host bridge with NAT) must
# never start here: containers use the node's own bridges.
scan_packages=(nfs-common smbclient lvm2 smartmontools udev lxc e2fsprogs)
missing=()
for p in "${scan_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing Debian packages (services not started): ${missing[*]}"
  own_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  status=0
  apt-get install -y -qq --no-install-recommends "${missing[@]}" || status=$?
  [ -z "$own_policy" ] || rm -f /usr/sbin/policy-rc.d
  [ "$status" = 0 ] || exit "$status"
fi

# Unprivileged containers map their ids into root's subordinate range, as
# on a Proxmox VE host.
for f in /etc/subuid /etc/subgid; do
  grep -q '^root:' "$f" 2>/dev/null || echo 'root:100000:65536' >> "$f"
done

# PAM service used for pam realm logins (as upstream's proxmox-ve-auth).
if [ ! -e /etc/pam.d/proxmox-ve-auth ]; then
  cat > /etc/pam.d/proxmox-ve-auth <<'PAM'
auth    include common-auth
account include common-account
PAM
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "installing Rust (rustup, stable)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi
