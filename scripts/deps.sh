#!/usr/bin/env bash
# Installs whatever certmaint needs that this Debian 12 machine lacks; quiet when
# everything is there. Idempotent. Used by the README's commands and by .ci/run.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config   # C11 toolchain and the build
  lua5.4 liblua5.4-dev               # the embedded language and the stock interpreter for specs
  libssl-dev openssl                 # X.509, keys, CSRs, OCSP; the openssl CLI for fixtures
  libcurl4-openssl-dev               # HTTP client (ACME, OCSP, etcd) on one multi handle
  libjansson-dev                     # JSON for C (ACME, etcd, status --json)
  libidn2-dev                        # IDN U-labels to A-labels when names become keys
  lua-filesystem                     # the file storage backend walks directories with lfs
  lua-busted                         # policy and Lua specs
  publicsuffix                       # the order budget's registered domains (/usr/share/publicsuffix)
  e2fsprogs                          # chattr: a storage spec makes a folder immutable (root)
  caddy curl                         # interop test: Caddy and certmaint share one storage tree
  pebble                             # ACME tests: Let's Encrypt's test CA and pebble-challtestsrv (its DNS)
  iproute2                           # ss: the Pebble harness (tests/integration/pebble.bash) checks its ports are free
  lego                               # ACME throughput figure: a reference client beside certmaint and Caddy
  etcd-server                        # the etcd storage backend's specs and cluster tests (/usr/bin/etcd)
  faketime                           # time tests: the daemon under wall-clock jumps (tests/integration/time_jumps.bash)
  clang libclang-rt-14-dev           # scripts/fuzz.sh: libFuzzer with ASan and UBSan (CI runs it)
  debhelper dpkg-dev                 # tests/integration/deb.sh builds the .deb (dpkg-buildpackage -b)
  luarocks                           # tests/integration/rockspec.sh installs the rock into a tree
  man-db                             # tests/integration/install.sh renders the man pages (man -l)
  systemd                            # systemd-analyze: deb.sh verifies the unit and its hardening
  adduser procps                     # the .deb's own Depends: deb.sh copies them into its clean root
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps: installing ${missing[*]}" >&2
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
