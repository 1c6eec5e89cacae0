#!/usr/bin/env bash
# Installs the Debian packages the e2e cluster needs (idempotent: installs only
# what is missing). Go itself must already be there (>= 1.26 for helm).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[ "$(id -u)" = 0 ] || die "run as root"
missing=()
for p in $DEB_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  log "all packages present: $DEB_PACKAGES"
  exit 0
fi
log "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# A fresh machine has no package lists yet.
if ! apt-cache show "${missing[0]}" >/dev/null 2>&1; then apt-get update -q; fi
apt-get install -y -q --no-install-recommends "${missing[@]}"
