#!/usr/bin/env bash
# Build Kubernetes binaries and the node's container runtime from Go modules
# into a per-version cache, and provide etcd, for controller-runtime's envtest
# and the single-node cluster (test/cluster).
#
#   KUBEBUILDER_ASSETS=$(hack/kube/build.sh)                  # kube-apiserver + etcd
#   hack/kube/build.sh kube-apiserver kubelet kube-scheduler kube-controller-manager
#   hack/kube/build.sh all      # every binary below: what test/cluster needs
#
# Binaries: kube-apiserver kube-controller-manager kube-scheduler kubelet
# kube-proxy kubectl (k8s.io/kubernetes/cmd/...), containerd
# containerd-shim-runc-v2 ctr (github.com/containerd/containerd/v2/cmd/...),
# runc (github.com/opencontainers/runc, built with cgo and -tags seccomp
# against Debian's libseccomp-dev, which is installed if missing), etcd.
#
# Versions are pinned in ONE place: hack/kube/go.mod (k8s.io/kubernetes and
# the k8s.io/* staging replaces, containerd, runc). The Kubernetes version is
# read from there and names the cache directory.
#
# Binaries go to ${KILN_KUBE_CACHE:-/var/cache/kiln-kube}/<k8s version>/bin.
# A binary already there, built from the same go.mod/go.sum with the same Go
# and flags, is not rebuilt: a second run takes seconds. A cold kube-apiserver
# build takes about 10-15 minutes on 2 cores; once the Go build cache
# (go env GOCACHE) is warm, a rebuild takes well under a minute.
#
# etcd: Debian's etcd-server (3.4) is installed if missing and /usr/bin/etcd
# is linked into the bin dir. Set KILN_KUBE_ETCD=build to build etcd instead,
# from go.etcd.io/etcd/server/v3 at the version k8s.io/kubernetes pins
# (see go.mod), or KILN_KUBE_ETCD=none to skip etcd.
#
# Environment:
#   KILN_KUBE_CACHE   cache root (default /var/cache/kiln-kube)
#   KILN_KUBE_ETCD    debian (default) | build | none
#   KILN_KUBE_NICE    niceness for the builds (default 10)
#   KILN_KUBE_FORCE   1 = rebuild even when the cache is up to date
#
# Logs go to stderr; the last line on stdout is the bin dir.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"

log() { printf 'kube-build: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v go >/dev/null || die "go is not on PATH"

kube_bins=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
runtime_bins=(containerd containerd-shim-runc-v2 ctr runc)
all_bins=("${kube_bins[@]}" "${runtime_bins[@]}")
bins=("$@")
[[ ${#bins[@]} -eq 0 ]] && bins=(kube-apiserver)
if [[ ${#bins[@]} -eq 1 && ${bins[0]} == all ]]; then bins=("${all_bins[@]}"); fi
for b in "${bins[@]}"; do
	case " ${all_bins[*]} etcd " in
	*" $b "*) ;;
	*) die "unknown binary '$b' (known: ${all_bins[*]} etcd all)" ;;
	esac
done

# Read the pinned versions from go.mod (no network needed for this).
modver() { go list -m -f '{{if .Replace}}{{.Replace.Version}}{{else}}{{.Version}}{{end}}' "$1"; }
k8s_version=$(modver k8s.io/kubernetes)
[[ $k8s_version =~ ^v([0-9]+)\.([0-9]+)\.[0-9]+ ]] || die "cannot parse k8s.io/kubernetes version '$k8s_version'"
k8s_major=${BASH_REMATCH[1]} k8s_minor=${BASH_REMATCH[2]}
containerd_version=$(modver github.com/containerd/containerd/v2)

cache_root=${KILN_KUBE_CACHE:-/var/cache/kiln-kube}
bindir=$cache_root/$k8s_version/bin
mkdir -p "$bindir"

# One build at a time per cache dir (parallel test packages may all call us).
exec 9>"$bindir/.lock"
flock 9

nice_n=${KILN_KUBE_NICE:-10}

# Version stamps, as Kubernetes' own hack/lib/version.sh sets them. buildDate
# stays at its in-tree default so that builds are reproducible.
kube_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	kube_ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=$k8s_major"
	kube_ldflags+=" -X $pkg.gitMinor=$k8s_minor -X $pkg.gitTreeState=clean"
done
# containerd's Makefile stamps the same variables.
containerd_ldflags="-s -w -X github.com/containerd/containerd/v2/version.Version=$containerd_version"
containerd_ldflags+=" -X github.com/containerd/containerd/v2/version.Package=github.com/containerd/containerd/v2"
# runc embeds its VERSION file itself.
runc_ldflags="-s -w"

# What a cached binary must match to be reused.
stamp_of() {
	{
		go version
		printf '%s\n' "$@" -trimpath
		grep -v '^[[:space:]]*//' go.mod # comments do not change a build
		cat go.sum
	} | sha256sum | cut -d' ' -f1
}

# build NAME PACKAGE CGO_ENABLED TAGS LDFLAGS [EXTRA STAMP INPUT]
build() {
	local name=$1 pkg=$2 cgo=$3 tags=$4 flags=$5 extra=${6:-} out=$bindir/$1 stamp
	stamp=$(stamp_of "$name" "$pkg" "CGO_ENABLED=$cgo" "tags=$tags" "$flags" "$extra")
	if [[ ${KILN_KUBE_FORCE:-0} != 1 && -x $out && -f $out.stamp && $(<"$out.stamp") == "$stamp" ]]; then
		log "$name: up to date ($out)"
		return
	fi
	log "$name: building $pkg (nice $nice_n; minutes when the Go build cache is cold)"
	local start=$SECONDS
	CGO_ENABLED=$cgo nice -n "$nice_n" go build -mod=readonly -trimpath -tags "$tags" \
		-ldflags "$flags" -o "$out.tmp" "$pkg" ||
		{ rm -f "$out.tmp"; die "$name: go build $pkg failed (log above)"; }
	mv -f "$out.tmp" "$out"
	echo "$stamp" >"$out.stamp"
	log "$name: built in $((SECONDS - start))s"
}

# apt_install PACKAGE... installs Debian packages that are missing (root only).
apt_install() {
	local missing=() p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	((${#missing[@]} == 0)) && return
	[[ $(id -u) == 0 ]] || die "missing Debian packages: ${missing[*]}; run as root or: apt-get install -y ${missing[*]}"
	log "installing Debian packages: ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null >&2 ||
		{ apt-get update -q </dev/null >&2 &&
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null >&2; } ||
		die "apt-get install ${missing[*]} failed"
}

# runc needs cgo and libseccomp: without -tags seccomp every pod fails with
# "seccomp not supported". The library's version goes into the stamp.
build_runc() {
	apt_install gcc libc6-dev pkg-config libseccomp-dev
	local libseccomp
	libseccomp=$(dpkg-query -W -f='${Version}' libseccomp-dev)
	build runc github.com/opencontainers/runc 1 seccomp "$runc_ldflags" "libseccomp-dev=$libseccomp"
}

etcd_debian() {
	if [[ ! -x /usr/bin/etcd ]]; then
		[[ $(id -u) == 0 ]] || die "etcd: /usr/bin/etcd is missing; run as root or: apt-get install -y etcd-server"
		log "etcd: installing Debian's etcd-server"
		# The package's maintainer scripts must not start an etcd daemon.
		local prc=/usr/sbin/policy-rc.d made_prc=
		if [[ ! -e $prc ]]; then printf '#!/bin/sh\nexit 101\n' >"$prc" && chmod +x "$prc" && made_prc=1; fi
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server >&2 ||
			{ apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server >&2; } ||
			{ [[ -n $made_prc ]] && rm -f "$prc"; die "etcd: apt-get install etcd-server failed"; }
		[[ -n $made_prc ]] && rm -f "$prc"
	fi
	rm -f "$bindir/etcd.stamp"
	ln -sfn /usr/bin/etcd "$bindir/etcd"
	log "etcd: $bindir/etcd -> /usr/bin/etcd ($(/usr/bin/etcd --version 2>/dev/null | head -1))"
}

want_etcd=${KILN_KUBE_ETCD:-debian}
for b in "${bins[@]}"; do
	case $b in
	etcd) ;;
	runc) build_runc ;;
	containerd | containerd-shim-runc-v2 | ctr)
		build "$b" "github.com/containerd/containerd/v2/cmd/$b" 0 "" "$containerd_ldflags" ;;
	*) build "$b" "k8s.io/kubernetes/cmd/$b" 0 "" "$kube_ldflags" ;;
	esac
done

case $want_etcd in
debian) etcd_debian ;;
build)
	[[ -L $bindir/etcd ]] && rm -f "$bindir/etcd"
	build etcd go.etcd.io/etcd/server/v3 0 "" "-s -w"
	;;
none) ;;
*) die "KILN_KUBE_ETCD must be debian, build or none (got '$want_etcd')" ;;
esac

echo "$bindir"
