# shellcheck shell=bash disable=SC2034 # the settings are used by the scripts that source this
# test/cluster/lib.sh: settings and helpers shared by up.sh, down.sh and smoke.sh.
# Sourced, not run. See test/cluster/README.md.

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# Everything the cluster writes lives under one directory; down.sh removes it.
S=${KILN_CLUSTER_DIR:-/var/lib/kiln-cluster}
S=${S%/}

# The pods' network: a /24 on a bridge that exists only on this machine. Its first address is
# the node's address: the kube-apiserver, the kubelet and the registry forwarder listen there,
# so that pods can reach them. 10.88.0.0/16 (containerd's and podman's default) is avoided.
POD_NET=${KILN_CLUSTER_POD_NET:-10.244.0}      # the pods get POD_NET.2 .. POD_NET.254
POD_CIDR=$POD_NET.0/24
NODE_IP=$POD_NET.1
SERVICE_CIDR=${KILN_CLUSTER_SERVICE_CIDR:-10.96.0.0/24}
API_SERVICE_IP=${SERVICE_CIDR%.*/*}.1            # the `kubernetes` Service's ClusterIP
BRIDGE=${KILN_CLUSTER_BRIDGE:-kiln0}
NODE_NAME=kiln-node
CLUSTER_DOMAIN=cluster.local

# Ports. The API server and the kubelet are on NODE_IP; the rest on loopback.
API_PORT=6443
ETCD_CLIENT_PORT=12379 # not etcd's default 2379, so that a packaged etcd does not collide
ETCD_PEER_PORT=12380
KCM_PORT=10257
SCHED_PORT=10259
KUBELET_PORT=10250
KUBELET_HEALTHZ_PORT=10248
PROXY_HEALTHZ_PORT=10256
PROXY_METRICS_PORT=10249

# The plain test registry that test/setup.sh runs on loopback. The node (containerd) pulls from
# it as localhost:5000; pods reach it through the forwarder as NODE_IP:5000.
REGISTRY_PORT=5000
REGISTRY=localhost:$REGISTRY_PORT
POD_REGISTRY=$NODE_IP:$REGISTRY_PORT
IMAGE_REPO=${KILN_CLUSTER_IMAGE_REPO:-$REGISTRY/kiln}
PAUSE_IMAGE=$REGISTRY/kiln-cluster/pause:busybox

# Paths under the state dir.
PKI=$S/pki
KCFG=$S/kubeconfigs
CONF=$S/config
LOGS=$S/logs
PIDS=$S/pids
BEFORE=$S/before # what the host looked like before up.sh changed it
RUN=$S/run
CONTAINERD_SOCK=$RUN/containerd.sock
SHIM_SOCKET_DIR=$S/s # short: a shim socket is this dir + 65 characters, and sun_path holds 107
KUBELET_ROOT=$S/kubelet
SECCOMP_DIR=$KUBELET_ROOT/seccomp
ADMIN_KUBECONFIG=$S/kubeconfig
# kubelet uses cgroupfs (this machine has hybrid cgroups) under this cgroup in every hierarchy.
CGROUP_ROOT=kiln-cluster
# The CNI plugins' result cache: libcni writes it to /var/lib/cni whatever the config says.
CNI_NETWORK=kiln-cluster
CNI_CACHE=/var/lib/cni

# Sysctls that the kubelet (protectKernelDefaults: false) and the CNI bridge plugin set; up.sh
# saves their values first and down.sh puts them back.
SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
	kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward
	net.ipv4.conf.all.route_localnet)

# Daemons in start order; down.sh stops them in reverse.
DAEMONS=(tcpfwd etcd kube-apiserver containerd kube-controller-manager kube-scheduler kube-proxy kubelet)

SECONDS=0
log() { printf 'cluster: [%3ds] %s\n' "$SECONDS" "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

require_root() {
	[[ $(id -u) -eq 0 ]] || die "must run as root (it mounts, makes a bridge and runs a kubelet); try: sudo $0"
}

check_state_dir() {
	[[ $S == /* ]] || die "KILN_CLUSTER_DIR must be an absolute path (got '$S')"
	[[ $S != / && ${#S} -ge 5 ]] || die "KILN_CLUSTER_DIR '$S' is too short to be a state dir"
	# containerd's shims put their sockets in SHIM_SOCKET_DIR/<64 hex digits>.
	((${#SHIM_SOCKET_DIR} <= 42)) || die "KILN_CLUSTER_DIR '$S' is too long: containerd's shim sockets live in $SHIM_SOCKET_DIR and a unix socket path holds 107 characters; use a path of at most 40 characters"
}

kbin() { echo "$BIN/$1"; }

# pid_of NAME prints the pid of daemon NAME if it runs (its pid file names a live process
# that runs the expected binary), else nothing and fails.
pid_of() {
	local name=$1 pid exe
	[[ -f $PIDS/$name.pid ]] || return 1
	pid=$(<"$PIDS/$name.pid")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
	[[ -f $PIDS/$name.exe && $exe == "$(<"$PIDS/$name.exe")" ]] || return 1
	echo "$pid"
}

kubectl_admin() { "$BIN/kubectl" --kubeconfig "$ADMIN_KUBECONFIG" "$@"; }

# tail_log NAME shows the end of a daemon's log on stderr.
tail_log() {
	local f=$LOGS/$1.log
	[[ -f $f ]] || return 0
	log "last lines of $f:"
	tail -n "${2:-25}" "$f" | sed 's/^/    /' >&2
}
