#!/usr/bin/env bash
# ensure-criu: give a Debian 12 (bookworm) x86_64 host a working CRIU >= 4.2. Run as root.
#
# Why >= 4.2: Debian 12's criu 3.17 fails `criu check` on recent kernels ("vdso:
# Unexpected rt vDSO area bounds"), and CRIU 4.1 cannot dump any TCP socket on
# kernels >= 6.16 ("Can't get 1:16 opt: Operation not supported": SO_PASSCRED is now
# refused on inet sockets; fixed in CRIU 4.2). Every sandbox's agent listens on TCP.
# Why a build: Debian's binary criu 4.2 needs a newer libc than bookworm's.
# How: fetch the upstream release tarball of Debian unstable's *source* package with
# a private apt configuration (signed Sources index, hash-checked tarball; the host's
# own apt sources are never touched), build only the criu binary against bookworm's
# -dev packages, install it as /usr/local/sbin/criu.
# Patches: scripts/criu-patches/*.patch are applied before the build (why: each
# patch's own header); a stamp with their hash says which ones the installed criu has.
# Idempotent: returns at once if a criu >= 4.2 is on PATH, `criu check` passes and
# it was built with the current patches.
set -euo pipefail
PREFIX=${CRIU_PREFIX:-/usr/local}
SRC_DIR=${CRIU_SRC_DIR:-/usr/local/src/criu}
SUITES=${CRIU_SUITES:-"sid forky"}
MIN_MINOR=2
PATCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/criu-patches"
STAMP="$PREFIX/share/cellbox/criu-patches.sha256"
# Build options (part of the stamp, so a change rebuilds). RUNDIR: CRIU caches its
# kernel probes in RUNDIR/criu.kdat only on a tmpfs; /run is not one on every host, so
# it is /run/cellbox/criu, which cellbox mounts as a tmpfs (runtime/criu_cache.py).
KDAT_RUNDIR=/run/cellbox/criu
MAKE_OPTS=(NETWORK_LOCK_DEFAULT=NETWORK_LOCK_NFTABLES "RUNDIR=$KDAT_RUNDIR")
patches_hash() { { cat "$PATCH_DIR"/*.patch 2>/dev/null; echo "${MAKE_OPTS[*]}"; } | sha256sum | cut -d' ' -f1; }
export PATH="$PREFIX/sbin:$PATH" DEBIAN_FRONTEND=noninteractive

criu_ok() {
    command -v criu >/dev/null 2>&1 || return 1
    local v major minor
    v=$(criu --version 2>/dev/null | awk '/^Version:/ {print $2}')
    major=${v%%.*}; minor=$(echo "$v" | cut -d. -f2)
    [ -n "$v" ] || return 1
    { [ "$major" -gt 4 ] || { [ "$major" -eq 4 ] && [ "${minor:-0}" -ge $MIN_MINOR ]; }; } || return 1
    [ "$(cat "$STAMP" 2>/dev/null)" = "$(patches_hash)" ] || return 1
    criu check >/dev/null 2>&1
}
if criu_ok; then
    echo "criu: $(command -v criu) $(criu --version | awk '/^Version:/ {print $2}') works; nothing to do"
    exit 0
fi

echo "criu: building CRIU >= 4.$MIN_MINOR from source (about a minute)"
apt-get install -y -qq --no-install-recommends \
    build-essential pkg-config ca-certificates xz-utils protobuf-compiler \
    libprotobuf-dev libprotobuf-c-dev protobuf-c-compiler \
    libnl-3-dev libcap-dev uuid-dev libnet1-dev libbsd-dev libnftables-dev \
    libprotobuf-c1 libnl-3-200 libnet1 libbsd0 libcap2 libuuid1 libnftables1 >/dev/null

mirror=$(apt-get indextargets --format '$(REPO_URI)' 'Codename: bookworm' 'Created-By: Packages' | head -n1)
[ -n "$mirror" ] || { echo "ensure-criu: no bookworm entry in the apt sources" >&2; exit 1; }
apt_dir=$(mktemp -d)
trap 'rm -rf "$apt_dir"' EXIT
mkdir -p "$apt_dir/lists/partial"
for s in $SUITES; do
    echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $s main"
done > "$apt_dir/sources.list"
APT_OPTS=(-o "Dir::Etc::sourcelist=$apt_dir/sources.list" -o "Dir::Etc::sourceparts=-"
          -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=")
apt-get "${APT_OPTS[@]}" update -qq
mkdir -p "$SRC_DIR" && cd "$SRC_DIR"
rm -rf criu-[0-9]*/ criu_*
# Only the .orig tarball (the upstream release) is used. Some mirrors serve it but not
# the .debian.tar.xz, and apt-get then exits 100 after fetching and checking it.
apt-get "${APT_OPTS[@]}" source --download-only -qq criu 2>&1 | grep -v -e 'unsandboxed' -e '^E: Failed to fetch' || true
orig=$(ls -1 criu_*.orig.tar.* 2>/dev/null | sort -V | tail -n1)
[ -n "$orig" ] || { echo "ensure-criu: apt-get source fetched no criu tarball" >&2; exit 1; }
tar -xf "$orig"
srcdir=$(ls -1d criu-[0-9]*/ | sort -V | tail -n1)
for p in "$PATCH_DIR"/*.patch; do
    [ -e "$p" ] || continue
    patch -d "$srcdir" -p1 --forward --quiet < "$p" \
        || { echo "ensure-criu: $(basename "$p") does not apply to $srcdir" >&2; exit 1; }
done
# Lock the network with nftables, not iptables (no iptables-restore on the host).
make -C "$srcdir" -j"$(nproc)" criu "${MAKE_OPTS[@]}" >build.log 2>&1 \
    || { tail -n 40 build.log >&2; exit 1; }
# Installed by rename, not by `make install` (which unlinks then copies): a criu that
# a running server starts at that moment must be the old one or the new one, never none.
install -d "$PREFIX/sbin" "$(dirname "$STAMP")"
install -m 0755 "$srcdir/criu/criu" "$PREFIX/sbin/.criu.new"
mv -f "$PREFIX/sbin/.criu.new" "$PREFIX/sbin/criu"
patches_hash > "$STAMP"
hash -r
criu --version
criu check
criu_ok || { echo "ensure-criu: built criu is not >= 4.$MIN_MINOR or fails criu check" >&2; exit 1; }
