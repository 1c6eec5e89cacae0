#!/usr/bin/env bash
# Points a shell at the e2e cluster: KUBECONFIG plus kubectl/helm/etcd on PATH.
#   source tests/cluster/env.sh     # in the current shell
#   eval "$(tests/cluster/env.sh)"  # same, from a subprocess
_ld_lib="$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=lib.sh
source "$_ld_lib"
unset _ld_lib
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  printf 'export KUBECONFIG=%q\nexport PATH=%q:%q:"$PATH"\n' "$KUBECONFIG_PATH" "$K8S_BIN_DIR" "$HELM_BIN_DIR"
else
  export KUBECONFIG="$KUBECONFIG_PATH"
  export PATH="$K8S_BIN_DIR:$HELM_BIN_DIR:$PATH"
fi
