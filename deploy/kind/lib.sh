# shellcheck shell=bash
# Shared settings and helpers for deploy/kind/{up,down}. Sourced, not run.
# The binaries, the add-on images and their caches come from deploy/cluster, so both
# clusters run the same Kubernetes build.
SCRIPT_NAME=${SCRIPT_NAME:-kind}
# shellcheck source=deploy/cluster/lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/../cluster/lib/common.sh"
# shellcheck source=deploy/cluster/lib/build.sh
. "$CLUSTER_DIR/lib/build.sh"
# shellcheck source=deploy/cluster/lib/images.sh
. "$CLUSTER_DIR/lib/images.sh"

KIND_DIR=$REPO_DIR/deploy/kind
KIND_CLUSTER=${KIND_CLUSTER_NAME:-cloudvote}
# kind names the kubectl context after the cluster.
KIND_CONTEXT=kind-$KIND_CLUSTER
KIND_HOME=$CLUSTER_HOME/kind
# kubeadm pulls nothing: every image it names is built here and preloaded in the node image.
KIND_IMAGE_REPO=cloudvote.local/kind
NODE_IMAGE_REPO=cloudvote.local/kind-node

kubectl_kind() { "$BIN_DIR/kubectl" --context "$KIND_CONTEXT" "$@"; }

# classic_build TAG CONTEXT [DOCKER BUILD ARGS...]: the classic builder (BuildKit needs the
# buildx plugin here), without its deprecation banner. The caller checks the result.
classic_build() {
    DOCKER_BUILDKIT=0 docker build -q "${@:3}" -t "$1" "$2" 2>&1 >/dev/null |
        grep -v -e DEPRECATED -e "BuildKit is currently" -e "environment-variable" -e "^$" >&2 || true
}

# component_image TAG BINARY BASE [PACKAGE...]: BINARY in /usr/local/bin of an image on
# BASE (scratch, or the Debian base with PACKAGES installed). kubeadm's static pods and
# DaemonSets call the binaries by name or by that path, as the upstream images lay them out.
# Skipped when the image already holds this binary and this recipe.
component_image() {
    local tag=$1 binary=$2 base=$3 context recipe
    shift 3
    context=$(mktemp -d)
    {
        echo "FROM $base"
        if (($#)); then
            echo "RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $* && rm -rf /var/lib/apt/lists/*"
        fi
        echo "COPY $binary /usr/local/bin/$binary"
        # CoreDNS listens on 53 as a non-root user: a file capability lets it bind there
        # once the pod grants NET_BIND_SERVICE, as in the upstream image. It is set by a
        # RUN step, because the classic builder drops extended attributes on COPY.
        if [[ $binary == coredns ]]; then
            echo "RUN setcap cap_net_bind_service=+ep /usr/local/bin/coredns"
            echo "USER 65532:65532"
            echo 'ENTRYPOINT ["/usr/local/bin/coredns"]'
        fi
    } >"$context/Dockerfile"
    recipe=$( { sha256sum <"$BIN_DIR/$binary"; cat "$context/Dockerfile"; } | sha256sum | cut -c1-64)
    if [[ "$(docker image inspect -f '{{index .Config.Labels "org.cloudvote.recipe"}}' "$tag" 2>/dev/null)" == "$recipe" ]]; then
        rm -rf "$context"
        return 0
    fi
    echo "LABEL org.cloudvote.recipe=$recipe" >>"$context/Dockerfile"
    cp "$BIN_DIR/$binary" "$context/$binary"
    classic_build "$tag" "$context"
    [[ "$(docker image inspect -f '{{index .Config.Labels "org.cloudvote.recipe"}}' "$tag" 2>/dev/null)" == "$recipe" ]] ||
        die "docker build of $tag failed"
    rm -rf "$context"
    say "  built $tag"
}
