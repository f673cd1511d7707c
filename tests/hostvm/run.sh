#!/usr/bin/env bash
# Runs a command as root inside the oxve test host VM (see README.md) and
# exits with its exit code.
#
#   run.sh [--share DIR]... [--cwd DIR] [--env NAME=VALUE]... -- COMMAND [ARG]...
#
# --share DIR   share DIR read-write with the VM (virtio-9p), mounted at the
#               same absolute path inside it; repeatable. Default: the repo root.
# --cwd DIR     working directory of COMMAND (default: the first share).
# --env N=V     set an environment variable for COMMAND; repeatable.
#
# Environment: OXVE_HOSTVM_TIMEOUT (seconds, default 900) kills the VM and
# fails; OXVE_HOSTVM_MEM (MiB, default 2048); OXVE_HOSTVM_UDEV=0 skips udevd;
# OXVE_HOSTVM_MODULES="mod ..." loads more kernel modules at boot;
# OXVE_HOSTVM_DEBUG=1 shows all kernel messages; OXVE_HOSTVM_CACHE (build.sh).
#
# The guest's console (kernel messages, the command's stdout and stderr) is
# streamed to stdout. Exit codes besides COMMAND's own: 124 timeout, 125 the
# VM failed before or without reporting one.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

usage() { sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0" >&2; exit 2; }
die() { echo "hostvm run: $*" >&2; exit 125; }

shares=() envs=() cwd=
while (($#)); do
  case $1 in
    --share)
      d=$(realpath -e -- "${2:?--share needs a directory}") || die "no such directory: $2"
      shares+=("$d"); shift 2 ;;
    --cwd) cwd=${2:?--cwd needs a directory}; shift 2 ;;
    --env) [[ ${2:-} == [A-Za-z_]*=* ]] || die "--env needs NAME=VALUE"; envs+=("$2"); shift 2 ;;
    --) shift; break ;;
    -h | --help) usage ;;
    *) usage ;;
  esac
done
(($#)) || usage
((${#shares[@]})) || shares=("$repo")
for s in "${shares[@]}"; do
  [ -d "$s" ] || die "not a directory: $s"
  [ "$s" != / ] || die "cannot share /"
done
cwd=${cwd:-${shares[0]}}

img=$("$here/build.sh" | tail -n1)
[ -e "$img/.complete" ] || die "build.sh did not produce an image"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/oxve-hostvm.XXXXXX")
qpid=
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  if [ -n "$qpid" ]; then kill "$qpid" 2>/dev/null || true; wait "$qpid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Control share: the command, the share list and options for guest-init.sh.
mkdir "$tmp/ctl"
{
  echo "cd $(printf %q "$cwd") || exit 127"
  for e in "${envs[@]}"; do echo "export $(printf %q "$e")"; done
  printf 'exec'; printf ' %q' "$@"; echo
} >"$tmp/ctl/cmd"
printf 'OXVE_HOSTVM_UDEV=%q\nOXVE_HOSTVM_MODULES=%q\n' \
  "${OXVE_HOSTVM_UDEV:-1}" "${OXVE_HOSTVM_MODULES:-}" >"$tmp/ctl/config"
virtfs=(-virtfs "local,path=$tmp/ctl,mount_tag=oxvectl,security_model=none")
: >"$tmp/ctl/shares"
# Shortest path first, so that a share nested in another mounts on top of it.
i=0
while IFS= read -r s; do
  printf 'share%d\t%s\n' "$i" "$s" >>"$tmp/ctl/shares"
  virtfs+=(-virtfs "local,path=$s,mount_tag=share$i,security_model=none")
  i=$((i + 1))
done < <(printf '%s\n' "${shares[@]}" | awk '!seen[$0]++ { print length($0) "\t" $0 }' | sort -n -s | cut -f2-)

# Copy-on-write overlay: the cached base image is never written.
qemu-img create -q -f qcow2 -b "$img/rootfs.img" -F raw "$tmp/run.qcow2"

# vmlinux (uncompressed, booted via PVH) is faster; vmlinuz is the fallback.
kernel=$img/vmlinux
[ -e "$kernel" ] || kernel=$img/vmlinuz

quiet="quiet loglevel=3"
[ "${OXVE_HOSTVM_DEBUG:-0}" = 1 ] && quiet="loglevel=7"
# The initrd (build.sh) mounts /dev/vda and starts /sbin/oxve-hostvm-init.
# mitigations=off: the guest only runs our tests, and the Spectre mitigations
# cost noticeably under TCG.
append="console=ttyS0 panic=-1 mitigations=off $quiet"

timeout=${OXVE_HOSTVM_TIMEOUT:-900}
start=$SECONDS
# KVM is not usable on this host (guests hang): TCG. -no-reboot together with
# panic=-1 turns a guest kernel panic into QEMU exiting.
qemu-system-x86_64 \
  -accel tcg -machine pc -cpu max -m "${OXVE_HOSTVM_MEM:-2048}" -smp 2 \
  -nodefaults -no-user-config -display none -no-reboot \
  -kernel "$kernel" -initrd "$img/initrd.img" -append "$append" \
  -drive "file=$tmp/run.qcow2,if=virtio,format=qcow2,cache=unsafe,discard=unmap" \
  "${virtfs[@]}" \
  -chardev "stdio,id=con,signal=off,logfile=$tmp/console.log" -serial chardev:con \
  -monitor none </dev/null &
qpid=$!

# Timeout: a watchdog loop in this shell, so that only our QEMU pid is killed.
timed_out=0
while kill -0 "$qpid" 2>/dev/null; do
  if ((SECONDS - start >= timeout)); then
    timed_out=1
    echo "hostvm run: timed out after ${timeout}s; killing QEMU (pid $qpid)" >&2
    kill "$qpid" 2>/dev/null || true
    for _ in {1..25}; do kill -0 "$qpid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$qpid" 2>/dev/null || true
    break
  fi
  sleep 0.2
done
qrc=0
wait "$qpid" || qrc=$?
qpid=
((timed_out == 0)) || exit 124

rc=
if [ -r "$tmp/ctl/rc" ]; then
  rc=$(<"$tmp/ctl/rc")
else # fall back to the marker line on the console
  rc=$(sed -n 's/^OXVE-HOSTVM-EXIT=\([0-9]*\).*/\1/p' "$tmp/console.log" | tail -n1)
fi
echo "hostvm run: VM ran $((SECONDS - start))s; command exit code ${rc:-none}" >&2
[ -n "$rc" ] || die "the VM ended (QEMU exit code $qrc) without reporting the command's exit code"
exit "$rc"
