#!/usr/bin/env bash
# Checks that no test-cluster node left anything behind on this machine: processes (kubelet,
# containerd, shims, runc containers), mounts or cgroups of a cluster directory, node
# addresses on lo. With CLUSTER_DIR (and the cluster's NODE_IPs), checks that one cluster only
# (others may be running); without, every cluster directory whose launcher is gone.
#
#   tests/node/leftovers.sh [CLUSTER_DIR [NODE_IP...]]
set -euo pipefail

dirs=()
node_ips=()
if [ $# -gt 0 ]; then
  dirs=("$1")
  node_ips=("${@:2}")
else
  for d in "${TMPDIR:-/tmp}"/ato-cluster.*; do
    [ -d "$d" ] || continue
    [ -f "$d/launcher.pid" ] && kill -0 "$(cat "$d/launcher.pid")" 2>/dev/null && continue
    dirs+=("$d")
  done
fi

found=0
report() { echo "leftover: $*" >&2; found=1; }
for d in "${dirs[@]}"; do
  if [ -e "$d" ]; then report "directory $d"; fi
  cgroup="ato-${d##*.}"
  for hierarchy in /sys/fs/cgroup/*/; do
    if [ -d "$hierarchy$cgroup" ]; then report "cgroup $hierarchy$cgroup"; fi
  done
  for m in $(findmnt -rn -o TARGET | awk -v d="$d/" 'index($0, d) == 1'); do report "mount $m"; done
  # Any process whose command line names the cluster directory: kubelet, containerd, shims
  # (-address .../containerd.sock), runc containers (their bundles live under it).
  for p in /proc/[0-9]*; do
    cmd="$(tr '\0' ' ' 2>/dev/null <"$p/cmdline")" || continue
    if [[ "$cmd" == *"$d/"* ]]; then report "process ${p#/proc/}: $cmd"; fi
  done
  # (A container process names no path, but it would keep its cgroup alive: see above.)
done
if [ -e /var/lib/kubelet/device-plugins/kubelet.sock ] && ! pgrep -x kubelet >/dev/null; then
  report "kubelet's device-plugin socket /var/lib/kubelet/device-plugins/kubelet.sock"
fi
for ip in "${node_ips[@]}"; do
  if ip -o addr show dev lo | grep -qF " $ip/"; then report "address $ip on lo"; fi
done
[ "$found" -eq 0 ] && echo "no leftovers of ${dirs[*]:-any finished cluster}" >&2
exit "$found"
