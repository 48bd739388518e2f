# shellcheck shell=bash
# Container images for the cluster's own add-ons, and loading images into the node's
# containerd without a registry. Sourced by `up` and `load-images`.

# ctr talks to this cluster's containerd; k8s.io is the namespace the CRI plugin uses, so
# an image imported there is one the kubelet sees.
ctr_k8s() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }

# static_image TAG BINARY UID [DIR]: a FROM scratch image holding one static binary, run as
# UID. BINARY is a path under $BIN_DIR (keda/operator); the image holds it as
# DIR/<its base name>, DIR being / unless given (Prometheus keeps its data in /prometheus,
# so its binary goes to /bin, where the official image has it).
# A subshell, so that its EXIT trap removes the build context however it ends (a failed
# build dies) without replacing a trap of the script that sourced this file.
static_image() (
    local tag=$1 source=$BIN_DIR/$2 binary=${2##*/} uid=$3 dir=${4:-} context
    if docker image inspect "$tag" >/dev/null 2>&1 &&
        [[ "$(docker image inspect -f '{{index .Config.Labels "org.cloudvote.binary-sha256"}}' "$tag")" == "$(sha256sum <"$source" | cut -c1-64)" ]]; then
        return 0
    fi
    context=$(mktemp -d)
    trap 'rm -rf "$context"' EXIT
    cp "$source" "$context/$binary"
    cat >"$context/Dockerfile" <<DOCKERFILE
FROM scratch
LABEL org.cloudvote.binary-sha256=$(sha256sum <"$source" | cut -c1-64)
COPY $binary $dir/$binary
USER $uid:$uid
ENTRYPOINT ["$dir/$binary"]
DOCKERFILE
    # The classic builder: BuildKit needs the buildx plugin here, and a FROM scratch image
    # with one COPY needs nothing BuildKit adds.
    DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$context" >/dev/null || die "docker build of $tag failed"
    say "  built $tag"
)

build_addon_images() {
    # The pod sandbox: pause.c compiled static, so the image needs no libc.
    if [[ ! -x $BIN_DIR/pause || $CLUSTER_DIR/src/pause/pause.c -nt $BIN_DIR/pause ]]; then
        gcc -Os -static -o "$BIN_DIR/pause" "$CLUSTER_DIR/src/pause/pause.c" || die "gcc could not build pause"
    fi
    static_image "$PAUSE_IMAGE" pause 65535
    static_image "$COREDNS_IMAGE" coredns 65532
    static_image "$METRICS_SERVER_IMAGE" metrics-server 65534
    static_image "$LOCAL_PATH_IMAGE" local-path-provisioner 65534
    # KEDA's two commands, as distroless's `nonroot` user (65532), which its images use.
    static_image "$KEDA_OPERATOR_IMAGE" keda/operator 65532
    static_image "$KEDA_ADAPTER_IMAGE" keda/adapter 65532
}

# load_images IMAGE...: copy images from the Docker engine into the node's containerd,
# skipping any whose image id containerd already holds under that name.
load_images() {
    local image id name
    for image in "$@"; do
        id=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null) || die "image $image is not in the Docker engine; build it first"
        name=$(normalize_image "$image")
        # Docker's image id is the config digest and containerd lists the manifest digest,
        # so the import records Docker's id in a label to compare against next time.
        if ctr_k8s images ls "name==$name" 2>/dev/null | grep -qF "docker-id=$id"; then
            continue
        fi
        docker save "$image" | ctr_k8s images import - >/dev/null || die "could not import $image"
        ctr_k8s images label "$name" "docker-id=$id" >/dev/null
        say "  loaded $image"
    done
}

# The name containerd stores: docker.io/library/ for a bare name, docker.io/ for user/name.
normalize_image() {
    local name=$1 first=${1%%/*}
    if [[ $name != */* ]]; then
        name=docker.io/library/$name
    elif [[ $first != *.* && $first != *:* && $first != localhost ]]; then
        name=docker.io/$name
    fi
    [[ $name == *:* && ${name##*/} == *:* ]] || name=$name:latest
    echo "$name"
}

# overlay_images DIR: every image the workloads of a kustomize directory name, once
# rendered (rendered_images says which).
overlay_images() {
    local rendered
    rendered=$(kubectl kustomize "$1") || die "kubectl kustomize $1 failed"
    rendered_images "$1" <<<"$rendered"
}

# rendered_images NAME < RENDERED_YAML: every image the workloads of rendered manifests
# name (NAME only labels an error), from each pod template's containers, init containers
# and ephemeral containers; for a caller that has the render already. The YAML is parsed
# with PyYAML, from the repository's virtualenv (`make deps`) or the system's python3
# (Debian's python3-yaml).
rendered_images() {
    local python=$REPO_DIR/.venv/bin/python
    [[ -x $python ]] || python=python3
    "$python" -c 'import yaml' 2>/dev/null ||
        die "rendered_images needs PyYAML: make deps (or apt-get install python3-yaml)"
    "$python" -c '
import sys

import yaml

CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")


def images(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key in CONTAINER_LISTS and isinstance(value, list):
                yield from (c["image"] for c in value if isinstance(c, dict) and "image" in c)
            else:
                yield from images(value)
    elif isinstance(node, list):
        for item in node:
            yield from images(item)


for image in sorted({i for doc in yaml.safe_load_all(sys.stdin) for i in images(doc)}):
    print(image)
' || die "could not read the images of $1"
}
