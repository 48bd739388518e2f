# shellcheck shell=bash
# Configuration files for containerd, CNI, the kubelet and kube-proxy. Sourced by `up`.

write_configs() {
    local ip=$1
    mkdir -p "$STATE_DIR/containerd" "$CNI_CONF_DIR" "$KUBELET_DIR" "$RUN_DIR"

    # A containerd of the cluster's own, beside the one Docker runs: its own socket, root and
    # state, so `down` can stop it and delete everything it stored without touching Docker.
    cat >"$STATE_DIR/containerd/config.toml" <<TOML
version = 2
root = "$STATE_DIR/containerd/root"
state = "$RUN_DIR/containerd"

[grpc]
  address = "$CONTAINERD_SOCK"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # This machine withholds CAP_SYS_RESOURCE even from root, so no process may lower an
  # oom_score_adj; runc would fail every pod that the kubelet asks to protect (-998 for
  # sandboxes). This caps the requested values at containerd's own, as rootless setups do.
  restrict_oom_score_adj = true
  # The only registry is the local one (deploy/registry): a stalled pull is a fault, so
  # fail it fast.
  image_pull_progress_timeout = "10s"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # cgroup v1 with no systemd managing this machine: cgroupfs, as the kubelet uses.
        SystemdCgroup = false
        # runc's state beside containerd's, not in the host containerd's /run/containerd.
        Root = "$RUN_DIR/runc"
  # Per-registry settings (hosts.toml: which CA to trust), read at each pull, so the
  # private registry of deploy/registry can start before or after the cluster.
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$REGISTRY_HOSTS_DIR"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$CNI_CONF_DIR"
TOML

    # One node, one bridge: every pod gets an address from POD_CIDR on cni0, the node is
    # its gateway, and traffic leaving the pod network is masqueraded. portmap serves
    # hostPort. A multi-node cluster needs routes between nodes (Flannel, Calico, Cilium).
    cat >"$CNI_CONF_DIR/10-cloudvote.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "cloudvote",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$STATE_DIR/cni-ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON

    cat >"$STATE_DIR/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
# This machine runs cgroup v1 and no systemd: cgroupfs, and an explicit opt-in, since
# Kubernetes 1.31 put cgroup v1 in maintenance mode.
cgroupDriver: cgroupfs
failCgroupV1: false
# Swap may be on here; the kubelet refuses to start with swap unless told otherwise.
failSwapOn: false
address: $ip
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: $PKI_DIR/ca.crt
authorization:
  mode: Webhook
tlsCertFile: $PKI_DIR/kubelet-server.crt
tlsPrivateKeyFile: $PKI_DIR/kubelet-server.key
clusterDomain: $CLUSTER_DOMAIN
clusterDNS: [$DNS_SERVICE_IP]
resolvConf: /etc/resolv.conf
# Images are loaded, never pulled: pulling in parallel or in series makes no difference,
# and garbage collection must not delete a loaded image that no registry can give back.
serializeImagePulls: false
imageGCHighThresholdPercent: 100
# A CI disk fills with build caches; evict only when it is really full.
evictionHard:
  memory.available: 200Mi
  nodefs.available: 2%
  imagefs.available: 2%
# Fast feedback for the tests: status and pod changes show within seconds.
nodeStatusUpdateFrequency: 5s
syncFrequency: 10s
YAML

    cat >"$STATE_DIR/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
# This kernel has no IPVS; iptables mode needs only netfilter and conntrack.
mode: iptables
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE_NAME
bindAddress: $ip
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
clientConnection:
  kubeconfig: $STATE_DIR/kube-proxy.kubeconfig
conntrack:
  # kube-proxy would otherwise try to raise nf_conntrack_max, which a VM may forbid.
  maxPerCore: 0
YAML
}
