#!/usr/bin/env bash
# Removes every trace of the nodes of a test cluster started by hack/local-cluster.sh
# --with-node, whether its launcher is alive, exited, or was killed outright:
#
#   hack/node/teardown.sh CLUSTER_DIR
#
# It kills every process the nodes ran (kubelet, containerd, shims, containers: all of them
# live in the cluster's own cgroup), unmounts everything under CLUSTER_DIR (container root
# filesystems, sandbox shm, kubelet volume tmpfs), removes the cgroups and the node IP
# addresses on lo. It leaves CLUSTER_DIR itself to the caller. Idempotent; a directory without
# nodes is left alone.
set -euo pipefail

dir="${1:?usage: $0 CLUSTER_DIR}"
dir="$(cd "$dir" 2>/dev/null && pwd)" || exit 0
[ -f "$dir/node/cgroup" ] || exit 0
cgroup="$(cat "$dir/node/cgroup")"
case "$cgroup" in ato-*) ;; *) echo "refusing odd cgroup name '$cgroup'" >&2; exit 1 ;; esac

# Every node process is in the pids hierarchy under the cluster's cgroup: kubelet and
# containerd were started there, shims inherit containerd's, runc puts containers under the
# kubelets' cgroup roots. SIGKILL them until none is left (a dying shim may still fork).
procs() { find "/sys/fs/cgroup/pids/$cgroup" -name cgroup.procs -exec cat {} + 2>/dev/null || true; }
for _ in $(seq 100); do
  pids="$(procs)"
  [ -n "$pids" ] || break
  # shellcheck disable=SC2086 # a list of pids
  kill -KILL $pids 2>/dev/null || true
  sleep 0.1
done
[ -z "$(procs)" ] || echo "teardown: processes still in cgroup $cgroup: $(procs | tr '\n' ' ')" >&2

# Deepest mounts first; lazily, so a mount still busy for a moment cannot stop the cleanup.
findmnt -rn -o TARGET | awk -v d="$dir/" 'index($0, d) == 1' | sort -r | while read -r target; do
  umount -l "$target" 2>/dev/null || true
done

# The cgroups, deepest first, in every hierarchy (kubelet and runc create them in all of them).
for hierarchy in /sys/fs/cgroup/*/; do
  [ -d "$hierarchy$cgroup" ] || continue
  for _ in $(seq 50); do
    find "$hierarchy$cgroup" -depth -type d -exec rmdir {} + 2>/dev/null || true
    [ -d "$hierarchy$cgroup" ] || break
    sleep 0.1 # a cgroup whose last process just died can be busy for a moment
  done
  [ -d "$hierarchy$cgroup" ] && echo "teardown: could not remove $hierarchy$cgroup" >&2
done

if [ -f "$dir/node/ips" ]; then
  while read -r ip; do
    ip addr del "$ip/32" dev lo 2>/dev/null || true
  done <"$dir/node/ips"
fi
# The host's sysctls as they were before the kubelets started (kubelet sets its defaults).
if [ -f "$dir/node/sysctls" ]; then
  while read -r key value; do sysctl -qw "$key=$value" 2>/dev/null || true; done <"$dir/node/sysctls"
fi
# kubelet's device manager listens on a fixed path whatever its --root-dir: remove it, and
# the directories when empty. (A concurrent test cluster's kubelets lose their device-plugin
# socket, which nothing here uses.)
rm -f /var/lib/kubelet/device-plugins/kubelet.sock
rmdir /var/lib/kubelet/device-plugins /var/lib/kubelet 2>/dev/null || true
rm -f "$dir/node/cgroup"
