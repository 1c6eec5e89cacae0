#!/usr/bin/env bash
# Builds lameduck's images from the workspace's release binaries, with no registry and no base
# image: each holds its binaries and the shared libraries they load (glibc, libgcc_s), like a
# distroless image. Imports them into the local cluster's containerd when it runs.
#   localhost/lameduck/proxy:dev    lameduck-proxy (also its `shutdown` and `wait` subcommands)
#   localhost/lameduck/await:dev    lameduck-await
#   localhost/lameduck/operator:dev lameduck-operator
#   localhost/lameduck/testapp:dev  lameduck-testapp and lameduck-await
#   localhost/lameduck/linkerd-shaped:dev  laid out as Linkerd's proxy image is, for the tests:
#       the proxy (lameduck-proxy, `/shutdown` off unless enabled) as its entrypoint, running as
#       uid 2102 from the image, `/usr/lib/linkerd/linkerd-await` (lameduck-await, which like
#       upstream ignores the answer to its POST) and `/bin/sleep`, nothing else
# The names are crates/api's `names::images`. Usage: tests/e2e/build-images.sh [--no-import]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cluster="$root/tests/cluster"
source "$cluster/lib.sh"

cd "$root"
# The programs carry the chart's appVersion as their release version (crates/api/build.rs), so the
# operator compares its CRD with the installed one by the release it ships in.
version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' deploy/lameduck/Chart.yaml)
[ -n "$version" ] || die "no appVersion in deploy/lameduck/Chart.yaml"
log "building release binaries (LAMEDUCK_VERSION=$version)"
# Not quiet: a first release build takes minutes, and cargo's progress shows it is moving.
LAMEDUCK_VERSION=$version \
  cargo build --release -p lameduck-proxy -p lameduck-await -p lameduck-operator -p lameduck -p lameduck-e2e --bins
out="$LAMEDUCK_CACHE/images/lameduck"
mkdir -p "$out"

# Copies a binary and every shared library it loads into a root filesystem.
add_binary() { # rootfs binary
  local rootfs=$1 bin=$2 lib
  install -D -m 0755 "$bin" "$rootfs/usr/local/bin/$(basename "$bin")"
  for lib in $(ldd "$bin" | grep -oE '/[^ ]+'); do
    install -D -m 0755 "$lib" "$rootfs$lib"
  done
}

new_rootfs() {
  local rootfs
  rootfs=$(mktemp -d)
  mkdir -p "$rootfs/tmp" "$rootfs/etc"
  chmod 1777 "$rootfs/tmp"
  printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/:/sbin/nologin\n' >"$rootfs/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
  echo "$rootfs"
}

pack() { # name rootfs entrypoint user
  local name=$1 rootfs=$2 entrypoint=$3 user=$4 tar
  tar="$out/$(echo "$name" | tr '/:' '__').tar"
  python3 "$cluster/images/mkimage.py" --name "$name" --rootfs "$rootfs" --entrypoint "[\"$entrypoint\"]" \
    --env PATH=/usr/local/bin --user "$user" -o "$tar" >&2
  rm -rf "$rootfs"
  echo "$tar"
}

image() { # name entrypoint binaries...
  local name=$1 entrypoint=$2 rootfs; shift 2
  rootfs=$(new_rootfs)
  for bin in "$@"; do add_binary "$rootfs" "target/release/$bin"; done
  pack "$name" "$rootfs" "$entrypoint" 65532:65532
}

linkerd_shaped() { # name
  local rootfs
  rootfs=$(new_rootfs)
  add_binary "$rootfs" target/release/lameduck-proxy
  add_binary "$rootfs" target/release/lameduck-await
  install -D -m 0755 "$rootfs/usr/local/bin/lameduck-await" "$rootfs/usr/lib/linkerd/linkerd-await"
  rm "$rootfs/usr/local/bin/lameduck-await"
  add_binary "$rootfs" "$(command -v sleep)"
  install -D -m 0755 "$rootfs/usr/local/bin/sleep" "$rootfs/bin/sleep"
  rm "$rootfs/usr/local/bin/sleep"
  pack "$1" "$rootfs" lameduck-proxy 2102:2102
}

tars=(
  "$(image localhost/lameduck/proxy:dev lameduck-proxy lameduck-proxy)"
  "$(image localhost/lameduck/await:dev lameduck-await lameduck-await)"
  "$(image localhost/lameduck/operator:dev lameduck-operator lameduck-operator)"
  "$(image localhost/lameduck/testapp:dev lameduck-testapp lameduck-testapp lameduck-await)"
  "$(linkerd_shaped localhost/lameduck/linkerd-shaped:dev)"
)
log "built ${tars[*]}"
if [ "${1:-}" != "--no-import" ]; then
  bash "$cluster/images.sh" load "${tars[@]}"
fi
