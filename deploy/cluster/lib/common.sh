# shellcheck shell=bash
# Shared settings and helpers for deploy/cluster/{up,down,status,load-images}.
# Sourced, not run. Every path the cluster writes is under $CLUSTER_HOME or $RUN_DIR, so
# `down` can remove exactly what `up` made.

CLUSTER_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO_DIR=$(cd "$CLUSTER_DIR/../.." && pwd)

# Cached builds (kept by `down`) and the running cluster's state (removed by `down`).
CLUSTER_HOME=${CLOUDVOTE_CLUSTER_HOME:-$REPO_DIR/.cache/cluster}
BIN_DIR=$CLUSTER_HOME/bin
STATE_DIR=$CLUSTER_HOME/state
PKI_DIR=$STATE_DIR/pki
LOG_DIR=$STATE_DIR/logs
KUBELET_DIR=$STATE_DIR/kubelet
CNI_CONF_DIR=$STATE_DIR/cni
# Sockets and runtime state: tmpfs, outside the repository (a socket path must stay short).
RUN_DIR=/run/cloudvote-cluster
CONTAINERD_SOCK=$RUN_DIR/containerd.sock
# Pid files on tmpfs too: after a reboot a stale pid could name an unrelated process,
# which `up` would take for a running component and `down` would kill.
PID_DIR=$RUN_DIR/pids
# Where kube-controller-manager's hostpath provisioner creates dynamic volumes.
HOSTPATH_PV_DIR=/tmp/hostpath_pv
# The static PersistentVolumes in deploy/k8s live here (hostPath, see base/storage.yaml).
STATIC_PV_DIR=/var/local/cloudvote

# Versions: each is the module version the wrapper go.mod in deploy/cluster/src pins.
KUBE_VERSION=v1.34.4
ETCD_VERSION=3.5.35
KIND_VERSION=v0.30.0
COREDNS_VERSION=1.14.7
METRICS_SERVER_VERSION=0.8.0
PAUSE_IMAGE=cloudvote.local/pause:3.10
COREDNS_IMAGE=cloudvote.local/coredns:$COREDNS_VERSION
METRICS_SERVER_IMAGE=cloudvote.local/metrics-server:$METRICS_SERVER_VERSION
LOCAL_PATH_VERSION=0.0.30
LOCAL_PATH_IMAGE=cloudvote.local/local-path-provisioner:$LOCAL_PATH_VERSION
LOCAL_PATH_DIR=/var/local/cloudvote-cluster
# KEDA (deploy/cluster/addons/keda.yaml): one module, two commands, two images.
KEDA_VERSION=v2.21.0
KEDA_OPERATOR_IMAGE=cloudvote.local/keda-operator:$KEDA_VERSION
KEDA_ADAPTER_IMAGE=cloudvote.local/keda-adapter:$KEDA_VERSION
# The local-path helper pods run this image (debootstrapped by scripts/docker-airgap).
HELPER_IMAGE=debian:bookworm-slim

# The private registry (deploy/registry): a stable name that /etc/hosts maps to the node's
# address, so manifests can name it; its state, CA and stored images; and the directory of
# per-registry hosts.toml files (the CA to trust) that the node's containerd reads at pull time.
REGISTRY_NAME=registry.cloudvote.test
REGISTRY_PORT=5443
REGISTRY=$REGISTRY_NAME:$REGISTRY_PORT
REGISTRY_HOME=${CLOUDVOTE_REGISTRY_HOME:-$REPO_DIR/.cache/registry}
REGISTRY_HOSTS_DIR=$REGISTRY_HOME/containerd-hosts
# The pushing side's login (docker, cosign, skopeo), kept out of root's ~/.docker, which the
# kubelet reads (deploy/registry/README.md says why that matters).
REGISTRY_DOCKER_CONFIG=$REGISTRY_HOME/docker

# Networks: pods get 10.88.0.0/16 from the bridge CNI, Services 10.96.0.0/16.
POD_CIDR=10.88.0.0/16
SERVICE_CIDR=10.96.0.0/16
API_SERVICE_IP=10.96.0.1
DNS_SERVICE_IP=10.96.0.10
CLUSTER_DOMAIN=cluster.local
API_PORT=6443
CONTEXT_NAME=cloudvote-local

NODE_NAME=$(hostname | tr '[:upper:]' '[:lower:]')
# The node's address: the source address of the default route.
node_ip() { ip -4 route get 1.1.1.1 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "src") print $(i + 1)}'; }

ADMIN_KUBECONFIG=$STATE_DIR/admin.kubeconfig
export PATH=$BIN_DIR:$PATH
mkdir -p "$CLUSTER_HOME"

step_number=0
say() { printf '[%s %s] %s\n' "$SCRIPT_NAME" "$(date +%T)" "$*" >&2; }
step() { step_number=$((step_number + 1)); say "step $step_number: $*"; }
die() { say "error: $*"; exit 1; }
kubectl_admin() { "$BIN_DIR/kubectl" --kubeconfig "$ADMIN_KUBECONFIG" "$@"; }

# A process this cluster started: its pid file exists and the pid is alive and not a zombie.
running() {
    local pid_file=$PID_DIR/$1.pid pid
    [[ -s $pid_file ]] || return 1
    pid=$(<"$pid_file")
    [[ -r /proc/$pid/stat && "$(cut -d' ' -f3 "/proc/$pid/stat")" != Z ]]
}

# start NAME COMMAND...: run a component in its own session, logging to $LOG_DIR/NAME.log.
# setsid detaches it from this script's process group, so `up` can exit while it runs.
start() {
    local name=$1
    shift
    if running "$name"; then
        say "  $name already running (pid $(<"$PID_DIR/$name.pid"))"
        return 0
    fi
    mkdir -p "$LOG_DIR" "$PID_DIR"
    setsid "$@" >>"$LOG_DIR/$name.log" 2>&1 </dev/null &
    echo $! >"$PID_DIR/$name.pid"
    say "  $name started (pid $!, log $LOG_DIR/$name.log)"
}

# wait_for SECONDS DESCRIPTION COMMAND...: poll until COMMAND succeeds, or fail naming it.
wait_for() {
    local timeout=$1 what=$2 deadline
    shift 2
    deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "$what: not ready after ${timeout}s"
        sleep 1
    done
}
