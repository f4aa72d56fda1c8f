#!/usr/bin/env bash
# ensure_criu: give a Debian 12 (bookworm) x86_64 host a working CRIU >= 4. Run it as root.
# Why a build: bookworm's own criu 3.17.1 fails `criu check` on recent kernels ("vdso:
# Unexpected rt vDSO area bounds"), and trixie's binary criu 4.1.1 needs libc6 >= 2.38.
# How: the function builds upstream CRIU from the orig tarball of trixie's *source* package,
# which apt checks against trixie's signed Sources index, using only bookworm -dev packages.
# It installs the result as /usr/local/sbin/criu.
# Idempotent: if a criu >= 4 is already on PATH and `criu check` passes, it does nothing.
# The body runs in a subshell, so its `set -e`, `cd`, trap and exit stay inside it.
# Optional environment: CRIU_PURGE_BUILD_DEPS=1 removes the toolchain and -dev packages
# afterwards (they take about 270 MB).
ensure_criu() (
    set -euo pipefail
    local_prefix=${CRIU_PREFIX:-/usr/local}
    src_dir=${CRIU_SRC_DIR:-/usr/local/src/criu}
    suite=${CRIU_SUITE:-trixie}            # the suite whose *source* package is built
    export PATH="$local_prefix/sbin:$PATH" DEBIAN_FRONTEND=noninteractive

    criu_ok() {   # a criu >= 4 is on PATH and `criu check` passes on this kernel
        local v
        command -v criu >/dev/null 2>&1 || return 1
        v=$(criu --version 2>/dev/null | awk '/^Version:/ {print $2}')
        [ -n "$v" ] && [ "${v%%.*}" -ge 4 ] 2>/dev/null || return 1
        criu check >/dev/null 2>&1
    }
    if criu_ok; then
        echo "criu: $(command -v criu) $(criu --version | awk '/^Version:/ {print $2}') works; nothing to do"
        exit 0
    fi

    apt-get update -qq
    # Trixie or newer: the distribution's own criu is >= 4, so install it, unless that would
    # upgrade libc6 (a bookworm host with a trixie binary entry). In that case, build below.
    cand=$(apt-cache policy criu 2>/dev/null | awk '/Candidate:/ {print $2}')
    if [ -n "$cand" ] && [ "$cand" != "(none)" ] && dpkg --compare-versions "$cand" ge 4 \
       && ! apt-get install -s --no-install-recommends criu 2>/dev/null | grep -q '^Inst libc6 '; then
        apt-get install -y -qq --no-install-recommends criu >/dev/null
        hash -r; criu --version; criu check
        exit 0
    fi

    # Build dependencies, all from bookworm. The runtime libraries are named too, so that
    # they are marked "manually installed" and no purge or autoremove can take them away.
    apt-get install -y -qq --no-install-recommends \
        build-essential pkg-config ca-certificates xz-utils \
        libprotobuf-dev libprotobuf-c-dev protobuf-c-compiler \
        libnl-3-dev libcap-dev uuid-dev libnet1-dev libbsd-dev libnftables-dev \
        libprotobuf-c1 libnl-3-200 libnet1 libbsd0 libcap2 libuuid1 libnftables1 >/dev/null

    # Fetch the source through apt: a deb-src entry for trixie, with no trixie binary entry,
    # so that apt never installs a trixie binary. The mirror is the one this host already
    # uses for bookworm.
    mirror=$(apt-get indextargets --format '$(REPO_URI)' 'Codename: bookworm' 'Created-By: Packages' | head -n1)
    [ -n "$mirror" ] || { echo "ensure_criu: no bookworm entry in the apt sources" >&2; exit 1; }
    srclist=/etc/apt/sources.list.d/criu-$suite-src.list
    echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" > "$srclist"
    trap 'rm -f "$srclist"' EXIT
    apt-get update -qq
    mkdir -p "$src_dir" && cd "$src_dir"
    rm -rf criu-[0-9]*/
    # Only the .orig.tar.xz (the upstream release) is used; no Debian patches are applied.
    # `|| true`: some mirrors serve the orig tarball but not the .dsc or .debian.tar.xz, and
    # then apt-get exits 100 after it has fetched the tarball and checked its SHA256.
    apt-get source --download-only -qq "criu/$suite" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true
    rm -f "$srclist"; trap - EXIT
    apt-get update -qq || true            # drops the trixie Sources index (~57 MB) again
    orig=$(ls -1 criu_*.orig.tar.* 2>/dev/null | sort -V | tail -n1)
    [ -n "$orig" ] || { echo "ensure_criu: apt-get source fetched no criu orig tarball" >&2; exit 1; }
    tar -xf "$orig"
    srcdir=$(ls -1d criu-[0-9]*/ | sort -V | tail -n1)

    # Build only the criu binary: no crit, pycriu, libcriu, plugins or man pages
    # (`make install` would also run pip). Lock the network with nftables rather than
    # iptables, so that dumping a process that has its own netns (runc, podman) does not
    # need an iptables-restore binary.
    make -C "$srcdir" -j"$(nproc)" criu NETWORK_LOCK_DEFAULT=NETWORK_LOCK_NFTABLES >build.log 2>&1 \
        || { tail -n 40 build.log >&2; exit 1; }
    make -C "$srcdir" install-criu PREFIX="$local_prefix" NETWORK_LOCK_DEFAULT=NETWORK_LOCK_NFTABLES >>build.log 2>&1
    hash -r
    criu --version
    criu check                            # prints "Looks good." and exits 0

    if [ "${CRIU_PURGE_BUILD_DEPS:-0}" = 1 ]; then
        # dpkg-dev, gcc and make are named here because autoremove keeps them: apt Suggests dpkg-dev.
        apt-get purge -y -qq build-essential dpkg-dev gcc g++ make pkg-config \
            libprotobuf-dev libprotobuf-c-dev protobuf-c-compiler libnl-3-dev libcap-dev \
            uuid-dev libnet1-dev libbsd-dev libnftables-dev >/dev/null
        apt-get autoremove -y -qq --purge >/dev/null
        apt-get clean
        rm -rf "$src_dir"
        criu check
    fi
)

ensure_criu "$@"
