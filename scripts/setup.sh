#!/usr/bin/env bash
# Set up cellbox on a Debian 12 host, from nothing; idempotent (a second run takes seconds).
# Run as root from the repository:  scripts/setup.sh [--test]
#   1. Debian packages (runc, btrfs-progs, nftables, mmdebstrap, buildah/skopeo, python3-venv;
#      --test: docker-registry and apache2-utils for the image tests)
#   2. CRIU >= 4 (built from source if needed: Debian 12's 3.17 fails on recent kernels)
#   3. kernel settings cellbox needs (pipe size for CRIU lazy pages; a tmpfs for CRIU's kernel cache)
#   4. the project's virtualenv (.venv) with pinned dependencies (--test: and test tools)
#   5. `cellbox setup`: data dir, storage pool, agent runtime, default image, network
set -euo pipefail
cd "$(dirname "$0")/.."
WITH_TEST=0
[ "${1:-}" = "--test" ] && WITH_TEST=1
export DEBIAN_FRONTEND=noninteractive

step() { printf '\n==> %s\n' "$*"; STEP="$*"; }
trap 'rc=$?; [ $rc -ne 0 ] && printf "\nsetup failed at step: %s (exit %s)\n" "${STEP:-?}" "$rc" >&2' EXIT

[ "$(id -u)" = 0 ] || { echo "setup must run as root (it installs packages and creates mounts)" >&2; exit 1; }
. /etc/os-release
[ "${VERSION_CODENAME:-}" = bookworm ] || echo "warning: tested on Debian 12 (bookworm), this is ${PRETTY_NAME:-unknown}" >&2

PACKAGES=(runc btrfs-progs nftables mmdebstrap iproute2 util-linux tar xz-utils ca-certificates
          python3 python3-venv python3-dev buildah skopeo golang-github-containers-common)
# --test: a registry the image tests run on loopback (docker-registry = the CNCF
# distribution server) and htpasswd for its auth.
# postgresql: the cluster tests start throwaway PostgreSQL 15 servers of their own (tests/cluster/pg.py).
[ $WITH_TEST = 1 ] && PACKAGES+=(docker-registry apache2-utils postgresql)
# --test: xfsprogs for bench/pool_backing.py (it measures XFS with reflink as a pool backing),
# crun for bench/runtimes.py (runc vs crun side by side; cellbox itself runs runc).
[ $WITH_TEST = 1 ] && PACKAGES+=(xfsprogs crun)
# --test: gcc and a static libc for the memory-state tests' vfork helper (a C program
# compiled per test run; the CRIU build pulls them in too, but only when it builds).
[ $WITH_TEST = 1 ] && PACKAGES+=(gcc libc6-dev)
# --test: the web console's browser tests drive Debian's Chromium (Playwright with
# executable_path; never a downloaded browser).
[ $WITH_TEST = 1 ] && PACKAGES+=(chromium chromium-driver)
# npm for the web console's front-end packages; a host with NodeSource's nodejs has it
# already (Debian's npm package would conflict with that nodejs).
command -v npm >/dev/null || PACKAGES+=(npm)
step "Debian packages"
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    echo "all present"
fi
if [ $WITH_TEST = 1 ] && command -v systemctl >/dev/null && systemctl is-enabled docker-registry >/dev/null 2>&1; then
    # The package enables a registry on :5000 for every interface; the tests start their own.
    systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi

step "CRIU >= 4"
bash scripts/ensure-criu.sh

step "kernel settings"
# CRIU's lazy-pages page server needs 4 MiB pipes; root here lacks CAP_SYS_RESOURCE.
cur=$(cat /proc/sys/fs/pipe-max-size)
[ "$cur" -ge 4194304 ] || echo 4194304 > /proc/sys/fs/pipe-max-size
echo "fs.pipe-max-size=$(cat /proc/sys/fs/pipe-max-size)"
# CRIU caches its kernel probes only on a tmpfs (runtime/criu_cache.py): /run/cellbox/criu.
mkdir -p -m 0700 /run/cellbox/criu
[ "$(stat -f -c %T /run/cellbox/criu)" = tmpfs ] \
    || mount -t tmpfs -o size=1m,mode=0700,nosuid,nodev,noexec cellbox-criu /run/cellbox/criu
echo "CRIU kernel cache: /run/cellbox/criu ($(stat -f -c %T /run/cellbox/criu))"

step "virtualenv (.venv)"
if [ ! -x .venv/bin/python ]; then
    /usr/bin/python3 -m venv .venv
fi
extras=""
[ $WITH_TEST = 1 ] && extras="[test]"
stamp=".venv/.installed$extras"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/pip install -q --disable-pip-version-check -e ".$extras"
    touch "$stamp"
else
    echo "up to date"
fi

step "web console front-end packages (npm ci, pinned by package-lock.json)"
ui_npm=src/cellbox/ui/npm
if [ ! -f "$ui_npm/node_modules/.package-lock.json" ] || [ "$ui_npm/package-lock.json" -nt "$ui_npm/node_modules/.package-lock.json" ]; then
    (cd "$ui_npm" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
else
    echo "up to date"
fi

step "cellbox setup (data dir, storage pool, agent runtime, default image, network)"
.venv/bin/cellbox setup
printf '\nsetup done\n'
