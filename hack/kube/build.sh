#!/usr/bin/env bash
# Build Kubernetes binaries from Go modules into a per-version cache, and
# provide etcd, for controller-runtime's envtest and the single-node cluster.
#
#   KUBEBUILDER_ASSETS=$(hack/kube/build.sh)                  # kube-apiserver + etcd
#   hack/kube/build.sh kube-apiserver kubelet kube-scheduler kube-controller-manager
#   hack/kube/build.sh all
#
# Versions are pinned in ONE place: hack/kube/go.mod (k8s.io/kubernetes and
# the k8s.io/* staging replaces). The Kubernetes version is read from there.
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

all_bins=(kube-apiserver kube-controller-manager kube-scheduler kubelet)
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

cache_root=${KILN_KUBE_CACHE:-/var/cache/kiln-kube}
bindir=$cache_root/$k8s_version/bin
mkdir -p "$bindir"

# One build at a time per cache dir (parallel test packages may all call us).
exec 9>"$bindir/.lock"
flock 9

nice_n=${KILN_KUBE_NICE:-10}

# Version stamps, as Kubernetes' own hack/lib/version.sh sets them. buildDate
# stays at its in-tree default so that builds are reproducible.
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=$k8s_major"
	ldflags+=" -X $pkg.gitMinor=$k8s_minor -X $pkg.gitTreeState=clean"
done

# What a cached binary must match to be reused.
stamp_of() {
	{
		go version
		printf '%s\n' "$1" "$2" "$ldflags" CGO_ENABLED=0 -trimpath
		grep -v '^[[:space:]]*//' go.mod # comments do not change a build
		cat go.sum
	} | sha256sum | cut -d' ' -f1
}

# build NAME PACKAGE
build() {
	local name=$1 pkg=$2 out=$bindir/$1 stamp
	stamp=$(stamp_of "$name" "$pkg")
	if [[ ${KILN_KUBE_FORCE:-0} != 1 && -x $out && -f $out.stamp && $(<"$out.stamp") == "$stamp" ]]; then
		log "$name: up to date ($out)"
		return
	fi
	log "$name: building $pkg (nice $nice_n; ~10+ min cold on 2 cores)"
	local start=$SECONDS
	CGO_ENABLED=0 nice -n "$nice_n" go build -mod=readonly -trimpath \
		-ldflags "$ldflags" -o "$out.tmp" "$pkg" ||
		{ rm -f "$out.tmp"; die "$name: go build $pkg failed"; }
	mv -f "$out.tmp" "$out"
	echo "$stamp" >"$out.stamp"
	log "$name: built in $((SECONDS - start))s"
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
	*) build "$b" "k8s.io/kubernetes/cmd/$b" ;;
	esac
done

case $want_etcd in
debian) etcd_debian ;;
build)
	[[ -L $bindir/etcd ]] && rm -f "$bindir/etcd"
	build etcd go.etcd.io/etcd/server/v3
	;;
none) ;;
*) die "KILN_KUBE_ETCD must be debian, build or none (got '$want_etcd')" ;;
esac

echo "$bindir"
