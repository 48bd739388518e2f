# shellcheck shell=bash
# Certificates and kubeconfigs for the local cluster, made with openssl. Sourced by `up`.
#
# Two CAs, as kubeadm makes them: the cluster CA signs every serving and client
# certificate; the front-proxy CA signs only the certificate kube-apiserver presents when
# it forwards a request to an aggregated API (metrics-server), so that a client
# certificate from the main CA can never pose as the proxy. A client's identity is its
# certificate: CN is the user, O the group (system:masters is cluster-admin).

# new_ca NAME SUBJECT_CN
new_ca() {
    local name=$1 cn=$2
    [[ -s $PKI_DIR/$name.crt ]] && return 0
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -subj "/CN=$cn" \
        -keyout "$PKI_DIR/$name.key" -out "$PKI_DIR/$name.crt" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
}

# new_cert NAME CA SUBJECT USAGE [SANS]: USAGE is serverAuth, clientAuth or both.
new_cert() {
    local name=$1 ca=$2 subject=$3 usage=$4 sans=${5:-} ext
    [[ -s $PKI_DIR/$name.crt ]] && return 0
    ext=$PKI_DIR/$name.ext
    {
        echo "basicConstraints=critical,CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        echo "extendedKeyUsage=$usage"
        [[ -n $sans ]] && echo "subjectAltName=$sans"
    } >"$ext"
    openssl req -new -newkey rsa:2048 -nodes -subj "$subject" \
        -keyout "$PKI_DIR/$name.key" -out "$PKI_DIR/$name.csr" 2>/dev/null
    openssl x509 -req -sha256 -days 365 -in "$PKI_DIR/$name.csr" \
        -CA "$PKI_DIR/$ca.crt" -CAkey "$PKI_DIR/$ca.key" -CAcreateserial \
        -extfile "$ext" -out "$PKI_DIR/$name.crt" 2>/dev/null
    rm -f "$PKI_DIR/$name.csr" "$ext"
}

# new_kubeconfig NAME CERT: a kubeconfig that logs in with PKI_DIR/CERT.{crt,key}.
new_kubeconfig() {
    local file=$STATE_DIR/$1.kubeconfig cert=$2 server=https://127.0.0.1:$API_PORT
    [[ -s $file ]] && return 0
    kubectl config set-cluster "$CONTEXT_NAME" --kubeconfig "$file" --server "$server" \
        --certificate-authority "$PKI_DIR/ca.crt" --embed-certs >/dev/null
    kubectl config set-credentials "$1" --kubeconfig "$file" --embed-certs \
        --client-certificate "$PKI_DIR/$cert.crt" --client-key "$PKI_DIR/$cert.key" >/dev/null
    kubectl config set-context default --kubeconfig "$file" --cluster "$CONTEXT_NAME" \
        --user "$1" >/dev/null
    kubectl config use-context default --kubeconfig "$file" >/dev/null
    chmod 600 "$file"
}

make_pki() {
    local ip=$1
    mkdir -p "$PKI_DIR"
    chmod 700 "$PKI_DIR"
    new_ca ca cloudvote-local-ca
    new_ca front-proxy-ca cloudvote-local-front-proxy-ca

    new_cert apiserver ca "/CN=kube-apiserver" serverAuth \
        "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN,DNS:localhost,DNS:$NODE_NAME,IP:127.0.0.1,IP:$API_SERVICE_IP,IP:$ip"
    # kube-apiserver's identity towards kubelets (logs, exec, port-forward).
    new_cert apiserver-kubelet-client ca "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
    new_cert front-proxy-client front-proxy-ca "/CN=front-proxy-client" clientAuth
    # The kubelet serves its API with a certificate the cluster CA signed, so kube-apiserver
    # and metrics-server verify it instead of skipping TLS verification.
    new_cert kubelet-server ca "/CN=$NODE_NAME" serverAuth "DNS:$NODE_NAME,DNS:localhost,IP:$ip,IP:127.0.0.1"
    # The Node authorizer only lets system:node:<name> touch its own node's objects.
    new_cert kubelet ca "/O=system:nodes/CN=system:node:$NODE_NAME" clientAuth
    new_cert admin ca "/O=system:masters/CN=cloudvote-admin" clientAuth
    new_cert controller-manager ca "/CN=system:kube-controller-manager" clientAuth
    new_cert scheduler ca "/CN=system:kube-scheduler" clientAuth
    new_cert kube-proxy ca "/CN=system:kube-proxy" clientAuth

    # ServiceAccount tokens are JWTs signed with this key; kube-apiserver checks them with it.
    if [[ ! -s $PKI_DIR/sa.key ]]; then
        openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI_DIR/sa.key" 2>/dev/null
        openssl pkey -in "$PKI_DIR/sa.key" -pubout -out "$PKI_DIR/sa.pub"
    fi
    # Secrets are encrypted in etcd (secretbox), not only base64-encoded.
    if [[ ! -s $PKI_DIR/encryption.yaml ]]; then
        cat >"$PKI_DIR/encryption.yaml" <<YAML
apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - secretbox:
          keys:
            - name: key1
              secret: $(head -c 32 /dev/urandom | base64)
      - identity: {}
YAML
    fi
    chmod 600 "$PKI_DIR"/*.key "$PKI_DIR/encryption.yaml"

    new_kubeconfig admin admin
    new_kubeconfig controller-manager controller-manager
    new_kubeconfig scheduler scheduler
    new_kubeconfig kubelet kubelet
    new_kubeconfig kube-proxy kube-proxy
}
