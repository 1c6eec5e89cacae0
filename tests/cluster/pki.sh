#!/usr/bin/env bash
# Generates the cluster PKI with openssl into $CLUSTER_DIR/pki (skips files that
# exist): a CA, the kube-apiserver serving cert, client certs and kubeconfigs for
# admin / controller-manager / scheduler / kubelet / kube-proxy, the kubelet
# serving cert, the apiserver's kubelet-client cert and the service-account key.
# Run by up.sh; safe to run again.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_cmds openssl

mkdir -p "$PKI_DIR"
cd "$PKI_DIR"
umask 077

if [ ! -s ca.crt ]; then
  log "pki: CA"
  openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
  openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj "/CN=lameduck-e2e-ca" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" -out ca.crt
fi

# cert NAME CN ORG(or "") USAGE(server|client|both) [SAN]
cert() {
  local name=$1 cn=$2 org=$3 usage=$4 san=${5:-} subj eku
  [ -s "$name.crt" ] && return 0
  log "pki: $name ($cn)"
  subj="/CN=$cn"
  [ -n "$org" ] && subj="/O=$org$subj"
  case "$usage" in
    server) eku=serverAuth ;;
    client) eku=clientAuth ;;
    both) eku=serverAuth,clientAuth ;;
  esac
  openssl ecparam -name prime256v1 -genkey -noout -out "$name.key" 2>/dev/null
  openssl req -new -key "$name.key" -subj "$subj" -out "$name.csr"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [ -n "$san" ] && echo "subjectAltName=$san"
  } > "$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 \
    -days 3650 -extfile "$name.ext" -out "$name.crt" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
}

cert apiserver kube-apiserver "" server \
  "IP:127.0.0.1,IP:$NODE_IP,IP:$SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DNS_DOMAIN"
cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters client
cert admin lameduck-admin system:masters client
cert controller-manager system:kube-controller-manager "" client
cert scheduler system:kube-scheduler "" client
cert kube-proxy system:kube-proxy "" client
cert kubelet "system:node:$NODE_NAME" system:nodes client
cert kubelet-serving "$NODE_NAME" "" server "IP:127.0.0.1,IP:$NODE_IP,DNS:$NODE_NAME,DNS:localhost"

# Front-proxy (request-header) CA and client: lets the API server authenticate to
# aggregated API servers, and silences "missing requestheader-client-ca-file".
if [ ! -s front-proxy-ca.crt ]; then
  log "pki: front-proxy CA"
  openssl ecparam -name prime256v1 -genkey -noout -out front-proxy-ca.key 2>/dev/null
  openssl req -x509 -new -key front-proxy-ca.key -sha256 -days 3650 -subj "/CN=lameduck-e2e-front-proxy-ca" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" -out front-proxy-ca.crt
fi
if [ ! -s front-proxy-client.crt ]; then
  log "pki: front-proxy-client"
  openssl ecparam -name prime256v1 -genkey -noout -out front-proxy-client.key 2>/dev/null
  openssl req -new -key front-proxy-client.key -subj "/CN=front-proxy-client" -out front-proxy-client.csr
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' > front-proxy-client.ext
  openssl x509 -req -in front-proxy-client.csr -CA front-proxy-ca.crt -CAkey front-proxy-ca.key -CAcreateserial \
    -sha256 -days 3650 -extfile front-proxy-client.ext -out front-proxy-client.crt 2>/dev/null
  rm -f front-proxy-client.csr front-proxy-client.ext
fi

if [ ! -s sa.key ]; then
  log "pki: service-account signing key"
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
fi

# kubeconfig FILE CERTNAME SERVER
kubeconfig() {
  local file=$1 name=$2 server=$3
  [ -s "$file" ] && return 0
  cat > "$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: lameduck
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 < ca.crt)
users:
- name: $name
  user:
    client-certificate-data: $(base64 -w0 < "$name.crt")
    client-key-data: $(base64 -w0 < "$name.key")
contexts:
- name: lameduck
  context:
    cluster: lameduck
    user: $name
    namespace: default
current-context: lameduck
EOF
}

server="https://127.0.0.1:$APISERVER_PORT"
kubeconfig "$CLUSTER_DIR/admin.kubeconfig" admin "$server"
kubeconfig controller-manager.kubeconfig controller-manager "$server"
kubeconfig scheduler.kubeconfig scheduler "$server"
kubeconfig kube-proxy.kubeconfig kube-proxy "$server"
kubeconfig kubelet.kubeconfig kubelet "$server"
chmod 0644 "$CLUSTER_DIR/admin.kubeconfig"
