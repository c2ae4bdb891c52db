#!/usr/bin/env bash
# A real, throw-away Kubernetes control plane on loopback: etcd, kube-apiserver and
# kube-controller-manager, built from pinned sources by hack/control-plane/build.sh.
#
#   hack/local-cluster.sh [--kubeconfig PATH] [--with-node] -- COMMAND [ARGS...]
#
# starts the control plane, runs COMMAND with KUBECONFIG pointing at it, then stops every
# process and removes every temporary file, whether COMMAND succeeds, fails or is
# interrupted. The exit status is COMMAND's. If this script is killed outright (SIGKILL),
# the control-plane processes and COMMAND die with it (parent-death signals), a reaper
# stops everything COMMAND started and removes the temporary directory, and the next
# run sweeps any directory a dead launcher left behind.
#
# COMMAND sees these variables:
#   PATH                      starts with the pinned release's kubectl
#   KUBECONFIG                admin kubeconfig (system:masters)
#   ATO_CLUSTER_DIR           the temporary directory holding the cluster's state
#   ATO_CLUSTER_CA            the CA certificate that signed the apiserver's serving cert
#   ATO_UNPRIVILEGED_TOKEN    bearer token of user "unprivileged" (no RBAC grants at all)
#   ATO_VERIFIER_PORT         loopback port where kube-apiserver expects the token verifier
#                             (TokenReview webhook over TLS, see --authentication-token-webhook-*)
#   ATO_VERIFIER_CERT/_KEY    serving certificate and key for the verifier, signed by ATO_CLUSTER_CA
#   ATO_VERIFIER_CLIENT_CA    CA the verifier should require client certificates from
#                             (--client-ca-file): it signed kube-apiserver's webhook client
#                             certificate and nothing else but the test client's below
#   ATO_VERIFIER_TEST_CLIENT_CERT/_KEY  a client certificate from ATO_VERIFIER_CLIENT_CA, for
#                             tests (and people) that talk to the verifier directly
#
# --with-node adds two real nodes, ato-node-1 and ato-node-2 (kubelet, containerd 2, runc; see
# hack/node/nodes.sh), and kube-scheduler. Only hostNetwork pods run there (no CNI); each node
# has an address of its own on lo, which is its hostNetwork pods' IP. Images come from OCI
# archives: hack/node/load-image.sh ARCHIVE... imports them into both nodes. In this mode
# kube-apiserver authorizes with Node,RBAC (and NodeRestriction admission), Pod Security exempts
# the runtime class ato-host-network (so a namespace enforcing "restricted" still admits
# hostNetwork pods that use it), kube-controller-manager also publishes kube-root-ca.crt, and
# the token webhook points at the in-cluster verifier on node 1 (ATO_WEBHOOK_VERIFIER_URL).
# COMMAND then also sees:
#   ATO_NODE_NAMES            "ato-node-1 ato-node-2"
#   ATO_NODE_IPS              their addresses, same order (e.g. "10.213.57.1 10.213.57.2")
#   ATO_API_HOST/_PORT        where pods reach kube-apiserver (127.0.0.1 and its port): set
#                             KUBERNETES_SERVICE_HOST/PORT to these (there is no kube-proxy)
#   ATO_HOST_NETWORK_RUNTIME_CLASS  "ato-host-network"
#   ATO_WEBHOOK_VERIFIER_URL  https://<node-1 IP>:8443/tokenreviews, where kube-apiserver sends
#                             TokenReviews; ATO_VERIFIER_CERT is valid for both node IPs, and
#                             ATO_VERIFIER_PORT is 8443
# Without --with-node none of this changes anything.
# --with-node is for single-user hosts only (a CI runner, your own machine): the nodes run
# root containerd and kubelet, and kube-apiserver admits privileged pods, so anyone holding a
# cluster admin credential is root on the host. The credentials stay in the private (0700)
# cluster directory: etcd takes client certificates only, and the admin bearer never appears
# on a command line.
#
# COMMAND may restart etcd or kube-apiserver under whatever it runs: see "Restarts on
# request" at the end of this script.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
kubeconfig_out=""
with_node=""
usage="usage: $0 [--kubeconfig PATH] [--with-node] -- COMMAND [ARGS...]"
while [ $# -gt 0 ]; do
  case "$1" in
    --kubeconfig) kubeconfig_out="$2"; shift 2 ;;
    --with-node) with_node=1; shift ;;
    --) shift; break ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
[ $# -gt 0 ] || { echo "$usage" >&2; exit 2; }

bin_dir="$("$here/control-plane/build.sh" ${with_node:+--with-node})"
if [ -n "$with_node" ]; then
  node_build="$("$here/node/build.sh")"
  { read -r node_bin; read -r pause_archive; read -r pause_image; } <<<"$node_build"
  # shellcheck source=node/nodes.sh
  source "$here/node/nodes.sh"
fi

# Sweep what launchers killed outright (SIGKILL runs no trap) left behind: a directory whose
# launcher is gone, and the command's process group if anything in it still runs.
for stale in "${TMPDIR:-/tmp}"/ato-cluster.*; do
  [ -f "$stale/launcher.pid" ] || continue
  kill -0 "$(cat "$stale/launcher.pid")" 2>/dev/null && continue
  [ -f "$stale/command.pgid" ] && kill -KILL -- "-$(cat "$stale/command.pgid")" 2>/dev/null || true
  "$here/node/teardown.sh" "$stale" # its nodes' processes, mounts, cgroups, lo addresses
  rm -rf "$stale"
done

dir="$(mktemp -d "${TMPDIR:-/tmp}/ato-cluster.XXXXXX")"
echo "$$" >"$dir/launcher.pid"
pids=()
command_pid=""
reaper_pid=""
stop() { # pid-or-negative-pgid: SIGTERM, then SIGKILL after 5 seconds
  kill -TERM -- "$1" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 -- "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "$1" 2>/dev/null || true
  wait "${1#-}" 2>/dev/null || true
}
cleanup() {
  local status=$?
  # Finish cleaning up even if more signals arrive (a second Ctrl-C, the terminal closing).
  trap '' INT TERM HUP PIPE
  trap - EXIT
  # The command first (it may need the apiserver to shut down cleanly), then the cluster.
  # COMMAND runs in a process group of its own, so this also stops what it started
  # (test binaries, operator processes).
  [ -n "$reaper_pid" ] && { kill -KILL "$reaper_pid" 2>/dev/null; wait "$reaper_pid" 2>/dev/null || true; }
  [ -n "$command_pid" ] && stop "-$command_pid"
  # The nodes before the control plane: kubelets, containerd, shims, containers, their mounts.
  if [ -n "$with_node" ]; then
    # kubelets first (they would restart containers), then containerd; teardown.sh kills what
    # is left (shims, containers) through the cluster's cgroup and removes mounts and addresses.
    for name in kubelet-ato-node-1 kubelet-ato-node-2 containerd-ato-node-1 containerd-ato-node-2; do
      [ -n "${pid_of[$name]:-}" ] && stop "${pid_of[$name]}"
    done
    "$here/node/teardown.sh" "$dir" || true
  fi
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do stop "$pid"; done
  # On a failure (not on Ctrl-C or SIGTERM) show what the control plane said last.
  if [ "$status" -ne 0 ] && [ "$status" -ne 130 ] && [ "$status" -ne 143 ] && [ -d "$dir/logs" ]; then
    for log in "$dir"/logs/*.log; do
      echo "---- last lines of $(basename "$log") ----" >&2
      tail -n 15 "$log" >&2 || true
    done
  fi
  rm -rf "$dir"
  [ -n "$kubeconfig_out" ] && rm -f "$kubeconfig_out"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# free_port VAR: sets VAR to a loopback port no socket uses and that no earlier call handed
# out (it sets a variable rather than printing, since $(free_port) would run in a subshell
# and forget the ports it gave out). The ports are drawn below the kernel's ephemeral range:
# a port inside it could be taken between this check and the bind by the local end of any
# outgoing connection (a CI run lost etcd's peer port that way).
used_ports=" "
read -r ephemeral_low _ < /proc/sys/net/ipv4/ip_local_port_range
if [ "$ephemeral_low" -lt 12000 ]; then ephemeral_low=61000; fi # a nonstandard range: draw above 10000 anyway
free_port() {
  local port
  while :; do
    port=$((10000 + RANDOM % (ephemeral_low - 10000)))
    if [[ "$used_ports" != *" $port "* ]] && [ -z "$(ss -Htan "sport = :$port")" ]; then
      used_ports+="$port "
      printf -v "$1" '%s' "$port"
      return
    fi
  done
}

# Run a control-plane process in the background; it gets SIGKILL if this script dies.
declare -A pid_of
start() { # name binary args...
  local name=$1; shift
  setpriv --pdeathsig KILL -- "$@" >>"$dir/logs/$name.log" 2>&1 &
  pids+=("$!")
  pid_of[$name]=$!
}

wait_for() { # description seconds command...
  local what=$1 seconds=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then echo "timed out after ${seconds}s waiting for $what" >&2; return 1; fi
    sleep 0.2
  done
}

mkdir -p "$dir/logs" "$dir/pki" "$dir/etcd"
started=$SECONDS

# --- certificates: our own CA, so clients verify the apiserver instead of skipping TLS checks
pki="$dir/pki"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=access-token-operator local CA" \
  -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
  -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' >"$pki/san.ext"
openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
  -days 2 -extfile "$pki/san.ext" -out "$pki/apiserver.crt" 2>/dev/null
openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
# The token verifier's serving certificate, so kube-apiserver reaches it over verified TLS.
openssl req -newkey rsa:2048 -nodes -subj "/CN=access-token-verifier" \
  -keyout "$pki/verifier.key" -out "$pki/verifier.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$pki/verifier.ext"
openssl x509 -req -in "$pki/verifier.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
  -days 2 -extfile "$pki/verifier.ext" -out "$pki/verifier.crt" 2>/dev/null
# kube-apiserver's client certificate for the verifier (the webhook kubeconfig's user), from a
# CA of its own: a verifier run with --client-ca-file then serves kube-apiserver and refuses
# anyone else, including holders of other certificates from the cluster CA.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=access-token-verifier client CA" \
  -keyout "$pki/webhook-client-ca.key" -out "$pki/webhook-client-ca.crt" 2>/dev/null
printf 'extendedKeyUsage=clientAuth\n' >"$pki/client.ext"
for client in kube-apiserver-webhook-client verifier-test-client; do
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$client" \
    -keyout "$pki/$client.key" -out "$pki/$client.csr" 2>/dev/null
  openssl x509 -req -in "$pki/$client.csr" -CA "$pki/webhook-client-ca.crt" -CAkey "$pki/webhook-client-ca.key" \
    -CAcreateserial -days 2 -extfile "$pki/client.ext" -out "$pki/$client.crt" 2>/dev/null
done

# etcd: TLS with client certificates from a CA of its own, for kube-apiserver (client) and
# for etcd itself (server and its peer port), so nobody else on the host reads or writes it.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=access-token-operator local etcd CA" \
  -keyout "$pki/etcd-ca.key" -out "$pki/etcd-ca.crt" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' >"$pki/etcd.ext"
for cert in etcd apiserver-etcd-client; do
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$cert" \
    -keyout "$pki/$cert.key" -out "$pki/$cert.csr" 2>/dev/null
  openssl x509 -req -in "$pki/$cert.csr" -CA "$pki/etcd-ca.crt" -CAkey "$pki/etcd-ca.key" \
    -CAcreateserial -days 2 -extfile "$pki/etcd.ext" -out "$pki/$cert.crt" 2>/dev/null
done

admin_token="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
unprivileged_token="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
cat >"$pki/tokens.csv" <<EOF
$admin_token,admin,admin-uid,system:masters
$unprivileged_token,unprivileged,unprivileged-uid
EOF

free_port etcd_port; free_port etcd_peer_port; free_port api_port; free_port verifier_port
verifier_url="https://127.0.0.1:$verifier_port/tokenreviews"
apiserver_node_flags=()
authorization_mode=RBAC
if [ -n "$with_node" ]; then
  nodes_prepare
  # The verifier runs in the cluster, on the chart's port, listening on its pod's (node's) IP.
  verifier_port=8443
  verifier_url="https://${node_ips[0]}:$verifier_port/tokenreviews"
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,IP:%s,IP:%s\nextendedKeyUsage=serverAuth\n' \
    "${node_ips[@]}" >"$pki/verifier.ext"
  openssl x509 -req -in "$pki/verifier.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 2 -extfile "$pki/verifier.ext" -out "$pki/verifier.crt" 2>/dev/null
  read -ra apiserver_node_flags <<<"$(nodes_apiserver_flags)"
  authorization_mode=Node,RBAC # kubelets are authorized by the Node authorizer, as in a real cluster
fi

# kube-apiserver asks the token verifier (when one listens there) about bearer tokens it
# does not know itself. Nothing listening is harmless: other authenticators still answer.
cat >"$dir/verifier-webhook.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: verifier
  cluster: {server: "$verifier_url", certificate-authority: "$pki/ca.crt"}
users:
- name: kube-apiserver
  user: {client-certificate: "$pki/kube-apiserver-webhook-client.crt", client-key: "$pki/kube-apiserver-webhook-client.key"}
contexts:
- name: webhook
  context: {cluster: verifier, user: kube-apiserver}
current-context: webhook
EOF

start_etcd() {
  start etcd "$bin_dir/etcd" \
    --name=default --data-dir="$dir/etcd" --unsafe-no-fsync --log-level=warn \
    --cert-file="$pki/etcd.crt" --key-file="$pki/etcd.key" \
    --client-cert-auth --trusted-ca-file="$pki/etcd-ca.crt" \
    --peer-cert-file="$pki/etcd.crt" --peer-key-file="$pki/etcd.key" \
    --peer-client-cert-auth --peer-trusted-ca-file="$pki/etcd-ca.crt" \
    --listen-client-urls="https://127.0.0.1:$etcd_port" --advertise-client-urls="https://127.0.0.1:$etcd_port" \
    --listen-peer-urls="https://127.0.0.1:$etcd_peer_port" --initial-advertise-peer-urls="https://127.0.0.1:$etcd_peer_port" \
    --initial-cluster="default=https://127.0.0.1:$etcd_peer_port"
}
etcd_health() {
  curl -fsS --cacert "$pki/etcd-ca.crt" --cert "$pki/apiserver-etcd-client.crt" --key "$pki/apiserver-etcd-client.key" \
    "https://127.0.0.1:$etcd_port/health"
}
start_etcd
wait_for etcd 30 etcd_health

start_kube_apiserver() {
  start kube-apiserver "$bin_dir/kube-apiserver" \
    --etcd-servers="https://127.0.0.1:$etcd_port" --etcd-cafile="$pki/etcd-ca.crt" \
    --etcd-certfile="$pki/apiserver-etcd-client.crt" --etcd-keyfile="$pki/apiserver-etcd-client.key" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
    --endpoint-reconciler-type=none \
    --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" \
    --token-auth-file="$pki/tokens.csv" \
    --authorization-mode="$authorization_mode" "${apiserver_node_flags[@]}" \
    --authentication-token-webhook-config-file="$dir/verifier-webhook.kubeconfig" \
    --authentication-token-webhook-version=v1 \
    --authentication-token-webhook-cache-ttl=1s \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$pki/sa.key" --service-account-signing-key-file="$pki/sa.key" \
    --service-cluster-ip-range=10.0.0.0/24 --allow-privileged=true \
    --enable-priority-and-fairness=false
}
start_kube_apiserver
# The admin bearer goes in a header file (mode 600), never on a command line other users see.
(umask 077 && printf 'Authorization: Bearer %s\n' "$admin_token" >"$pki/admin-header")
curl_api() { curl -fsS --cacert "$pki/ca.crt" -H @"$pki/admin-header" "https://127.0.0.1:$api_port$1"; }
wait_for kube-apiserver 60 curl_api /readyz

kubeconfig="$dir/admin.kubeconfig"
cat >"$kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority-data: $(base64 -w0 <"$pki/ca.crt")
users:
- name: admin
  user: {token: $admin_token}
contexts:
- name: local
  context: {cluster: local, user: admin, namespace: default}
current-context: local
EOF
chmod 600 "$kubeconfig"

# Each controller acts as a ServiceAccount of its own (system:serviceaccount:kube-system:<controller>),
# as in a real cluster: the admission policies in deploy/ let exactly those identities delete.
# The aggregation controller fills the built-in admin/edit/view roles from deploy/tenant-roles.yaml.
# The workload controllers let tests observe the rollouts of a rotation's restart targets
# (without --with-node there is no node: a workload with replicas never becomes available,
# one with none rolls out at once).
controllers=garbage-collector-controller,namespace-controller,serviceaccount-controller,serviceaccount-token-controller,clusterrole-aggregation-controller,deployment-controller,replicaset-controller,statefulset-controller,daemonset-controller
# Pods with projected ServiceAccount tokens mount kube-root-ca.crt: nothing starts without it.
# The node lifecycle controller lifts the not-ready taint kubelets register with. The
# disruption controller computes PodDisruptionBudgets' allowed disruptions: without it every
# eviction (kubectl drain) is refused.
if [ -n "$with_node" ]; then controllers+=,root-ca-certificate-publisher-controller,node-lifecycle-controller,disruption-controller; fi
start kube-controller-manager "$bin_dir/kube-controller-manager" \
  --kubeconfig="$kubeconfig" --authentication-kubeconfig="$kubeconfig" --authorization-kubeconfig="$kubeconfig" \
  --bind-address=127.0.0.1 --secure-port=0 --leader-elect=false \
  --controllers="$controllers" \
  --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
  --use-service-account-credentials=true
# The namespace controller creates each namespace's default ServiceAccount: once that exists,
# kube-controller-manager is up and talking to the apiserver.
wait_for kube-controller-manager 60 curl_api /api/v1/namespaces/default/serviceaccounts/default
if [ -n "$with_node" ]; then nodes_start_all; fi

if [ -n "$kubeconfig_out" ]; then
  mkdir -p "$(dirname "$kubeconfig_out")"
  install -m 600 "$kubeconfig" "$kubeconfig_out"
fi
echo "local control plane (Kubernetes $("$bin_dir/kube-apiserver" --version | awk '{print $2}')) ready in $((SECONDS - started))s at https://127.0.0.1:$api_port" >&2

# kubectl of the pinned release comes first on PATH.
export PATH="$bin_dir:$PATH"
export KUBECONFIG="$kubeconfig" ATO_CLUSTER_DIR="$dir" ATO_CLUSTER_CA="$pki/ca.crt"
export ATO_UNPRIVILEGED_TOKEN="$unprivileged_token" ATO_VERIFIER_PORT="$verifier_port"
export ATO_VERIFIER_CERT="$pki/verifier.crt" ATO_VERIFIER_KEY="$pki/verifier.key"
export ATO_VERIFIER_CLIENT_CA="$pki/webhook-client-ca.crt"
export ATO_VERIFIER_TEST_CLIENT_CERT="$pki/verifier-test-client.crt" ATO_VERIFIER_TEST_CLIENT_KEY="$pki/verifier-test-client.key"
if [ -n "$with_node" ]; then
  export ATO_NODE_NAMES="${node_names[*]}" ATO_NODE_IPS="${node_ips[*]}"
  export ATO_API_HOST=127.0.0.1 ATO_API_PORT="$api_port"
  export ATO_HOST_NETWORK_RUNTIME_CLASS=ato-host-network ATO_WEBHOOK_VERIFIER_URL="$verifier_url"
fi
# Run COMMAND in a session of its own, in the background, and wait, so that a signal reaches
# our trap at once and cleanup can stop everything COMMAND started.
# COMMAND gets a parent-death signal too. What it starts (test binaries, operators) does not,
# so a reaper that dies with this script stops COMMAND's whole process group and removes
# the temporary directory if this script is killed outright (SIGKILL skips the trap).
setpriv --pdeathsig KILL -- setsid "$@" &
command_pid=$!
echo "$command_pid" >"$dir/command.pgid"
setpriv --pdeathsig TERM -- bash -c '
  trap "kill -KILL -- -$1 2>/dev/null; \"$3\" \"$2\"; rm -rf -- \"$2\"; exit 0" TERM
  while :; do sleep 1; done' reaper "$command_pid" "$dir" "$here/node/teardown.sh" &
reaper_pid=$!
# Restarts on request, for tests of faults under a running operator: write
# "<etcd|kube-apiserver> <seconds down>" to $ATO_CLUSTER_DIR/restart-request and send this
# script SIGUSR1 (its pid is in $ATO_CLUSTER_DIR/launcher.pid). The process is stopped, kept
# down that long, started again on the same port and data, and once it is ready its name is
# appended to $ATO_CLUSTER_DIR/restarts.
restart_requested=""
trap 'restart_requested=1' USR1
restart() { # name seconds-down
  local name=$1 down=$2
  case "$name" in
    etcd|kube-apiserver) ;;
    *) echo "cannot restart $name" >&2; return 1 ;;
  esac
  echo "restarting $name (down ${down}s)" >&2
  stop "${pid_of[$name]}"
  sleep "$down"
  case "$name" in
    etcd) start_etcd; wait_for etcd 30 etcd_health ;;
    kube-apiserver) start_kube_apiserver; wait_for kube-apiserver 60 curl_api /readyz ;;
  esac
  wait_for kube-apiserver 60 curl_api /readyz
  echo "$name" >>"$dir/restarts"
}
set +e
while :; do
  wait "$command_pid"
  status=$?
  if [ -n "$restart_requested" ]; then
    restart_requested=""
    if kill -0 "$command_pid" 2>/dev/null; then
      # shellcheck disable=SC2046 # two words: name and seconds
      restart $(cat "$dir/restart-request")
      continue
    fi
    wait "$command_pid"
    status=$?
  fi
  break
done
set -e
exit "$status"
