# shellcheck shell=bash
# Builds the cluster's binaries from upstream Go modules into $BIN_DIR. Sourced by `up`.
#
# Each component is a wrapper module under deploy/cluster/src whose go.mod and go.sum pin
# the upstream version; the module proxy serves the sources and go.sum verifies them. A
# component is rebuilt only when its wrapper module or the Go toolchain changed (a stamp
# file records the hash), because `go build` relinks every time, even from a warm cache.

# Version stamped into the Kubernetes binaries, as the upstream release build does with
# hack/lib/version.sh; without it they report v0.0.0 and kubectl warns of version skew.
kube_ldflags() {
    local minor=${KUBE_VERSION#v1.}
    minor=${minor%%.*}
    local flags="-s -w" pkg
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        flags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
        flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done
    echo "$flags"
}

source_hash() {
    local dir=$CLUSTER_DIR/src/$1
    { go version; find "$dir" -type f | sort | xargs sha256sum; echo "${2:-}"; } | sha256sum | cut -c1-16
}

# build_component NAME LDFLAGS PACKAGE... : one `go build` for all the packages of one module,
# into $BIN_DIR, or into $COMPONENT_OUT when set (a directory for commands whose names would
# be ambiguous on PATH, such as KEDA's `operator` and `adapter`).
build_component() {
    local name=$1 ldflags=$2 out=${COMPONENT_OUT:-$BIN_DIR}
    shift 2
    local stamp=$BIN_DIR/.stamp-$name hash started
    hash=$(source_hash "$name" "$ldflags")
    if [[ -s $stamp && "$(<"$stamp")" == "$hash" ]]; then
        say "  $name: cached"
        return 0
    fi
    say "  $name: building $*"
    started=$SECONDS
    (cd "$CLUSTER_DIR/src/$name" &&
        CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out/" "$@") ||
        die "go build of $name failed"
    echo "$hash" >"$stamp"
    say "  $name: built in $((SECONDS - started))s"
}

build_all() {
    command -v go >/dev/null || die "go is not installed (https://go.dev/doc/install)"
    mkdir -p "$BIN_DIR"
    local started=$SECONDS
    build_component kubernetes "$(kube_ldflags)" \
        k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
        k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet \
        k8s.io/kubernetes/cmd/kube-proxy k8s.io/kubernetes/cmd/kubectl ./cmd/lb-controller \
        k8s.io/kubernetes/cmd/kubeadm
    build_component etcd "-s -w" .
    build_component coredns "-s -w" .
    build_component metrics-server "-s -w" sigs.k8s.io/metrics-server/cmd/metrics-server
    build_component local-path-provisioner "-s -w" github.com/rancher/local-path-provisioner
    build_component kube-router "-s -w" github.com/cloudnativelabs/kube-router/v2/cmd/kube-router
    # kind and kubeadm serve only the multi-node cluster (deploy/kind); both build in seconds.
    build_component kind "-s -w" sigs.k8s.io/kind
    # KEDA: the operator (ScaledObject controller, which also owns an HPA per ScaledObject)
    # and the adapter (the external.metrics.k8s.io API server that HPA reads). Its version
    # variables are the ones upstream's Makefile sets (GO_LDFLAGS).
    COMPONENT_OUT=$BIN_DIR/keda build_component keda \
        "-s -w -X github.com/kedacore/keda/v2/version.Version=$KEDA_VERSION -X github.com/kedacore/keda/v2/version.GitCommit=$KEDA_VERSION" \
        github.com/kedacore/keda/v2/cmd/operator github.com/kedacore/keda/v2/cmd/adapter
    say "  binaries ready in $((SECONDS - started))s"
}

# keda_crd_dir: KEDA's CRDs as its module ships them (config/crd: the generated CRDs plus
# upstream's kustomize patches), from the module cache that the build filled. Applied from
# there rather than copied into this repository, so they always match the binaries.
keda_crd_dir() {
    local dir
    dir=$(cd "$CLUSTER_DIR/src/keda" && go mod download -json github.com/kedacore/keda/v2 |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    [[ -n $dir && -d $dir/config/crd ]] || die "KEDA's module is not in the module cache (go mod download failed?)"
    echo "$dir/config/crd"
}
