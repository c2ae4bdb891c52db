# Two kubelet nodes for hack/local-cluster.sh --with-node. Sourced by it, not run: it uses the
# launcher's start, stop, wait_for, free_port, curl_api and variables ($dir, $pki, $bin_dir,
# $node_bin, $pause_archive, $pause_image).
#
# Both nodes live in the host's network namespace, each with an address of its own on lo (so
# two hostNetwork pods on different nodes can listen on the same port). Each runs its own
# containerd and kubelet; everything they start stays in the cgroup $node_cgroup, which
# hack/node/teardown.sh uses to stop it all.

node_names=(ato-node-1 ato-node-2)

# Node addresses 10.213.X.1 and 10.213.X.2 on lo, with an X no other cluster uses (kubelet
# refuses 127.0.0.0/8 node IPs). "ip addr add" fails on an address already present, so two
# launchers picking the same X at once cannot both get it.
nodes_claim_ips() {
  node_ips=()
  local attempt x
  for attempt in $(seq 50); do
    x=$((RANDOM % 256))
    ip -o addr show | grep -qF " 10.213.$x." && continue
    ip addr add "10.213.$x.1/32" dev lo 2>/dev/null || continue
    echo "10.213.$x.1" >>"$dir/node/ips"
    if ip addr add "10.213.$x.2/32" dev lo 2>/dev/null; then
      echo "10.213.$x.2" >>"$dir/node/ips"
      node_ips=("10.213.$x.1" "10.213.$x.2")
      return 0
    fi
  done
  echo "found no free 10.213.X.0/24 for the node addresses after $attempt attempts" >&2
  return 1
}

# The cluster's own cgroup in every hierarchy: "daemons" for containerd and kubelet (shims
# inherit it), one per node as the kubelet's cgroup root. cpuset children start empty in
# cgroup v1 and accept no process until given CPUs and memory nodes.
nodes_make_cgroups() {
  node_cgroup="ato-${dir##*.}"
  echo "$node_cgroup" >"$dir/node/cgroup"
  local hierarchy child
  for hierarchy in /sys/fs/cgroup/*/; do
    mountpoint -q "$hierarchy" || continue
    for child in "" /daemons /ato-node-1 /ato-node-2; do
      mkdir -p "$hierarchy$node_cgroup$child"
      if [ -f "$hierarchy$node_cgroup$child/cpuset.cpus" ]; then
        cat "${hierarchy}cpuset.cpus" >"$hierarchy$node_cgroup$child/cpuset.cpus"
        cat "${hierarchy}cpuset.mems" >"$hierarchy$node_cgroup$child/cpuset.mems"
      fi
    done
  done
}

# A certificate from the cluster CA: name subject extensions.
nodes_cert() {
  local name=$1 subject=$2 extensions=$3
  openssl req -newkey rsa:2048 -nodes -subj "$subject" \
    -keyout "$pki/$name.key" -out "$pki/$name.csr" 2>/dev/null
  printf '%b' "$extensions" >"$pki/$name.ext"
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 2 -extfile "$pki/$name.ext" -out "$pki/$name.crt" 2>/dev/null
}

# kubeconfig for a client certificate: file name
nodes_kubeconfig() {
  cat >"$1" <<EOK
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {server: "https://127.0.0.1:$api_port", certificate-authority: "$pki/ca.crt"}
users:
- name: $2
  user: {client-certificate: "$pki/$2.crt", client-key: "$pki/$2.key"}
contexts:
- name: local
  context: {cluster: local, user: $2}
current-context: local
EOK
}

# Everything kube-apiserver needs before it starts: node addresses (the token webhook points
# at node 1), certificates, the Pod Security admission configuration.
nodes_prepare() {
  mkdir -p "$dir/node"
  nodes_make_cgroups
  nodes_claim_ips
  local i
  for i in 0 1; do
    nodes_cert "${node_names[$i]}-client" "/O=system:nodes/CN=system:node:${node_names[$i]}" 'extendedKeyUsage=clientAuth\n'
    nodes_cert "${node_names[$i]}-serving" "/CN=${node_names[$i]}" \
      "subjectAltName=IP:${node_ips[$i]},DNS:${node_names[$i]}\nextendedKeyUsage=serverAuth\n"
  done
  nodes_cert kube-scheduler "/CN=system:kube-scheduler" 'extendedKeyUsage=clientAuth\n'
  # kube-apiserver's identity towards kubelets (logs, exec): a cluster admin, as kubeadm does.
  nodes_cert kube-apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" 'extendedKeyUsage=clientAuth\n'
  # Pods in a namespace enforcing the "restricted" Pod Security level may still use the host
  # network when they ask for this runtime class (created once the apiserver is up).
  cat >"$dir/node/admission.yaml" <<EOA
apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: PodSecurity
  configuration:
    apiVersion: pod-security.admission.config.k8s.io/v1
    kind: PodSecurityConfiguration
    defaults: {enforce: privileged, enforce-version: latest, audit: privileged, audit-version: latest, warn: privileged, warn-version: latest}
    exemptions: {usernames: [], namespaces: [], runtimeClasses: [ato-host-network]}
EOA
}

# kube-apiserver flags for node mode (besides --authorization-mode=Node,RBAC).
nodes_apiserver_flags() {
  echo --enable-admission-plugins=NodeRestriction \
    --admission-control-config-file="$dir/node/admission.yaml" \
    --kubelet-client-certificate="$pki/kube-apiserver-kubelet-client.crt" \
    --kubelet-client-key="$pki/kube-apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$pki/ca.crt" --kubelet-preferred-address-types=InternalIP
}

# Run a node process in the cluster's cgroup (so teardown finds it and all it starts).
nodes_start() { # name binary args...
  local name=$1; shift
  start "$name" sh -c 'echo $$ >"$1"; shift; exec "$@"' sh \
    "/sys/fs/cgroup/pids/$node_cgroup/daemons/cgroup.procs" "$@"
}

nodes_start_all() {
  local i name ip n kubelet_port healthz_port
  # kubelet sets some kernel defaults (panic on oops, overcommit): teardown puts them back.
  for key in vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes; do
    echo "$key $(sysctl -n "$key")" >>"$dir/node/sysctls"
  done
  # No CNI plugin: only hostNetwork pods run. A loopback-only network makes containerd report
  # the network ready, so the nodes become Ready and need no toleration.
  mkdir -p "$dir/node/cni"
  cat >"$dir/node/cni/10-loopback.conflist" <<'EOC'
{"cniVersion": "1.0.0", "name": "ato-host-network-only", "plugins": [{"type": "loopback"}]}
EOC
  for i in 0 1; do
    name=${node_names[$i]} ip=${node_ips[$i]} n="$dir/node/$name"
    mkdir -p "$n"
    cat >"$n/containerd.toml" <<EOT
version = 3
root = "$n/containerd/root"
state = "$n/containerd/state"
# Plugins that would touch host-global paths or probe devices.
imports = []
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.nri.v1.nri", "io.containerd.snapshotter.v1.blockfile", "io.containerd.snapshotter.v1.erofs", "io.containerd.differ.v1.erofs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$n/containerd.sock"
[ttrpc]
  address = "$n/containerd.sock.ttrpc"
[debug]
  address = ""
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "$pause_image"
[plugins."io.containerd.cri.v1.runtime"]
  # Sandboxes ask for oom_score_adj -998; lowering it needs CAP_SYS_RESOURCE, which this VM lacks.
  restrict_oom_score_adj = true
  cdi_spec_dirs = []
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "$dir/node/cni"
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        SystemdCgroup = false
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
EOT
    # containerd finds containerd-shim-runc-v2 on PATH.
    PATH="$node_bin:$PATH" nodes_start "containerd-$name" "$node_bin/containerd" --config "$n/containerd.toml"
  done
  for i in 0 1; do
    n="$dir/node/${node_names[$i]}"
    wait_for "containerd of ${node_names[$i]}" 60 "$node_bin/ctr" -a "$n/containerd.sock" version
    "$here/node/load-image.sh" --socket "$n/containerd.sock" "$pause_archive" >>"$dir/logs/load-image.log" 2>&1
  done
  for i in 0 1; do
    name=${node_names[$i]} ip=${node_ips[$i]} n="$dir/node/$name"
    free_port kubelet_port; free_port healthz_port
    nodes_kubeconfig "$n/kubelet.kubeconfig" "$name-client"
    cat >"$n/kubelet.yaml" <<EOK
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This VM: cgroup v1, no systemd as PID 1, no CAP_SYS_RESOURCE, swap possibly on.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$node_cgroup/$name
oomScoreAdj: 0
failSwapOn: false
containerRuntimeEndpoint: unix://$n/containerd.sock
address: $ip
port: $kubelet_port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $healthz_port
tlsCertFile: $pki/$name-serving.crt
tlsPrivateKeyFile: $pki/$name-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
podLogsDir: $n/pod-logs
# The disk is shared with other work: evict only when it is really full.
evictionHard: {memory.available: 100Mi, nodefs.available: 1Gi, imagefs.available: 1Gi, nodefs.inodesFree: "1%", imagefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
registerNode: true
EOK
    nodes_start "kubelet-$name" "$bin_dir/kubelet" --config="$n/kubelet.yaml" \
      --kubeconfig="$n/kubelet.kubeconfig" --root-dir="$n/kubelet" \
      --hostname-override="$name" --node-ip="$ip"
  done
  nodes_kubeconfig "$dir/node/kube-scheduler.kubeconfig" kube-scheduler
  start kube-scheduler "$bin_dir/kube-scheduler" \
    --kubeconfig="$dir/node/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig="$dir/node/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig="$dir/node/kube-scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=0 --leader-elect=false
  kubectl_admin() { "$bin_dir/kubectl" --kubeconfig="$kubeconfig" "$@"; }
  kubectl_admin apply -f - >/dev/null <<EOR
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata: {name: ato-host-network}
handler: runc
EOR
  # Ready, and schedulable: kubelets register with a not-ready taint that
  # kube-controller-manager lifts once they report Ready.
  nodes_schedulable() {
    [ "$(kubectl_admin get nodes -o jsonpath='{range .items[*]}{.metadata.name}={.spec.taints}{" "}{end}')" = "ato-node-1= ato-node-2= " ]
  }
  for name in "${node_names[@]}"; do
    wait_for "node $name Ready" 120 kubectl_admin wait --for=condition=Ready --timeout=2s "node/$name"
  done
  wait_for "nodes without taints" 60 nodes_schedulable
}
