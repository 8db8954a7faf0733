#!/usr/bin/env bash
# test/cluster/up.sh (make cluster-up): a real single-node Kubernetes on this machine, with kiln's
# controller deployed from config/ as a user would deploy it. See test/cluster/README.md.
#
# Builds what it needs from Go modules (hack/kube/build.sh all: kube-*, kubectl, containerd, runc;
# cached), installs etcd and the CNI plugins from Debian if missing, makes certificates and
# kubeconfigs, starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd,
# kubelet and kube-proxy with all their state under ${KILN_CLUSTER_DIR:-/var/lib/kiln-cluster},
# builds the pause, builder and controller images with kiln and pushes them to the test registry
# (localhost:5000), deploys the controller with `kubectl apply -k` and waits until the node is
# Ready, the default ServiceAccount exists and the controller is Available.
#
# The last line on stdout is the admin kubeconfig's path. Logs: $KILN_CLUSTER_DIR/logs.
set -euo pipefail

# shellcheck source=test/cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

APT_PACKAGES=(containernetworking-plugins nftables openssl iproute2 curl util-linux mount)

# ---------------------------------------------------------------- preflight

preflight() {
	require_root
	check_state_dir
	local running=() d
	for d in "${DAEMONS[@]}"; do
		pid_of "$d" >/dev/null && running+=("$d")
	done
	if ((${#running[@]} > 0)); then
		die "a cluster already runs from $S (${running[*]}); run 'make cluster-down' first"
	fi
	if [[ -e $S ]]; then
		log "removing what a previous run left in $S (nothing of it runs)"
		"$REPO_ROOT/test/cluster/down.sh" >&2 || die "could not clean $S up; see the messages above"
	fi
	ip link show "$BRIDGE" >/dev/null 2>&1 && die "network interface $BRIDGE already exists; is another cluster up? (make cluster-down removes ours)"
	if ip -4 route show | awk '{print $1}' | grep -qx "$POD_CIDR"; then
		die "$POD_CIDR is already routed on this machine; set KILN_CLUSTER_POD_NET to a free 10.x.y"
	fi
	local port busy=()
	for port in $ETCD_CLIENT_PORT $ETCD_PEER_PORT $KCM_PORT $SCHED_PORT $KUBELET_HEALTHZ_PORT \
		$PROXY_HEALTHZ_PORT $PROXY_METRICS_PORT $API_PORT $KUBELET_PORT; do
		ss -Hltn "sport = :$port" | grep -q . && busy+=("$port")
	done
	((${#busy[@]} == 0)) || die "TCP ports ${busy[*]} are in use (ss -ltnp shows by what); the cluster needs them"
	if [[ -S /var/lib/kubelet/device-plugins/kubelet.sock ]] && ss -Hlx | grep -q /var/lib/kubelet/device-plugins/kubelet.sock; then
		die "another kubelet runs on this machine (it listens on /var/lib/kubelet/device-plugins/kubelet.sock)"
	fi
	if [[ $(stat -f -c %T /sys/fs/cgroup) == cgroup2fs ]]; then
		CGROUP_MODE=unified
	else
		CGROUP_MODE=v1
	fi
}

install_packages() {
	local missing=() p
	for p in "${APT_PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	if ((${#missing[@]} > 0)); then
		log "apt: installing ${missing[*]}"
		export DEBIAN_FRONTEND=noninteractive
		apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null >&2 ||
			{ apt-get update -q </dev/null >&2 && apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null >&2; } ||
			die "apt-get install ${missing[*]} failed"
	fi
	local plugin
	for plugin in bridge host-local loopback; do
		[[ -x /usr/lib/cni/$plugin ]] || die "the CNI plugin /usr/lib/cni/$plugin is missing (package containernetworking-plugins)"
	done
}

# ---------------------------------------------------------------- host state we change

# Records what down.sh must restore or must not remove: sysctl values, and whether the
# directories that components create outside the state dir existed.
record_host() {
	mkdir -p "$BEFORE"
	local k v
	: >"$BEFORE/sysctl"
	for k in "${SYSCTLS[@]}"; do
		v=$(sysctl -n "$k" 2>/dev/null) || continue
		printf '%s=%s\n' "$k" "$v" >>"$BEFORE/sysctl"
	done
	[[ -e $CNI_CACHE ]] && touch "$BEFORE/cni-cache-existed"
	[[ -e /var/log/containers ]] && touch "$BEFORE/var-log-containers-existed"
	[[ -e /run/containerd ]] && touch "$BEFORE/run-containerd-existed"
	# The kubelet's device manager always listens on /var/lib/kubelet/device-plugins/kubelet.sock.
	[[ -e /var/lib/kubelet ]] && touch "$BEFORE/var-lib-kubelet-existed"
	[[ -e /var/lib/kubelet/device-plugins/kubelet.sock ]] && touch "$BEFORE/device-plugin-socket-existed"
	return 0
}

# ---------------------------------------------------------------- certificates, kubeconfigs

# cert NAME CN [O] [SANS]: a key and a certificate signed by the cluster CA.
cert() {
	local name=$1 cn=$2 org=${3:-} sans=${4:-} subj ext
	subj="/CN=$cn"
	[[ -n $org ]] && subj="/O=$org$subj"
	ext="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=${sans:+serverAuth,}clientAuth"
	[[ -n $sans ]] && ext+="
subjectAltName=$sans"
	openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
		-keyout "$PKI/$name.key" -out "$PKI/$name.csr" -subj "$subj" 2>/dev/null ||
		die "openssl: cannot make the key and request for $name"
	openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
		-set_serial "0x$(openssl rand -hex 16)" -days 365 -out "$PKI/$name.crt" \
		-extfile <(printf '%s\n' "$ext") 2>/dev/null || die "openssl: cannot sign the certificate of $name"
	rm -f "$PKI/$name.csr"
	chmod 0600 "$PKI/$name.key"
}

# kubeconfig NAME CERT USER: a kubeconfig that authenticates with PKI/CERT.{crt,key}.
kubeconfig() {
	local name=$1 cert=$2 user=$3
	cat >"$KCFG/$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kiln
  cluster:
    server: https://$NODE_IP:$API_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: $user
  user:
    client-certificate: $PKI/$cert.crt
    client-key: $PKI/$cert.key
contexts:
- name: kiln
  context: {cluster: kiln, user: $user}
current-context: kiln
EOF
	chmod 0600 "$KCFG/$name.kubeconfig"
}

make_pki() {
	mkdir -p "$PKI" "$KCFG"
	chmod 0700 "$PKI"
	openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
		-keyout "$PKI/ca.key" -out "$PKI/ca.crt" -days 3650 -subj "/CN=kiln-cluster-ca" \
		-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null ||
		die "openssl: cannot make the cluster CA"
	cert apiserver kube-apiserver "" \
		"IP:$NODE_IP,IP:$API_SERVICE_IP,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN"
	cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
	cert admin kubernetes-admin system:masters
	cert controller-manager system:kube-controller-manager
	cert scheduler system:kube-scheduler
	cert kube-proxy system:kube-proxy
	cert kubelet-client "system:node:$NODE_NAME" system:nodes
	cert kubelet "$NODE_NAME" "" "IP:$NODE_IP,IP:127.0.0.1,DNS:$NODE_NAME,DNS:localhost"
	# The service-account token signing key.
	openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/sa.key" 2>/dev/null ||
		die "openssl: cannot make the service-account key"
	openssl ec -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null ||
		die "openssl: cannot write the service-account public key"
	chmod 0600 "$PKI/ca.key" "$PKI/sa.key"

	kubeconfig admin admin kubernetes-admin
	mv "$KCFG/admin.kubeconfig" "$ADMIN_KUBECONFIG"
	kubeconfig controller-manager controller-manager system:kube-controller-manager
	kubeconfig scheduler scheduler system:kube-scheduler
	kubeconfig kube-proxy kube-proxy system:kube-proxy
	kubeconfig kubelet kubelet-client "system:node:$NODE_NAME"
}

# ---------------------------------------------------------------- configuration files

write_configs() {
	mkdir -p "$CONF" "$CONF/cni" "$CONF/certs.d" "$S/cni/networks" "$SECCOMP_DIR/kiln" \
		"$KUBELET_ROOT" "$S/pod-logs" "$S/volume-plugins" "$S/containerd/root" "$S/containerd/state" \
		"$S/containerd/tmp" "$S/containerd/opt" "$S/runc" "$SHIM_SOCKET_DIR" "$RUN" "$S/etcd"
	chmod 0700 "$S/etcd" "$SHIM_SOCKET_DIR"

	# The registries the node pulls from: the test registry, as localhost:5000 and as pods see it.
	local host
	for host in "$REGISTRY" "127.0.0.1:$REGISTRY_PORT" "$POD_REGISTRY"; do
		mkdir -p "$CONF/certs.d/$host"
		cat >"$CONF/certs.d/$host/hosts.toml" <<EOF
server = "http://$host"

[host."http://$host"]
  capabilities = ["pull", "resolve", "push"]
  skip_verify = true
EOF
	done

	cat >"$CONF/cni/10-$CNI_NETWORK.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$CNI_NETWORK",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$S/cni/networks"
      }
    }
  ]
}
EOF

	# containerd 2.x (config version 4, as containerd 2.4 writes it): every path under the state dir; no imports of
	# /etc/containerd; NRI off (it would open /var/run/nri). The traps from ../shared/TESTING.md:
	# restrict_oom_score_adj (this machine refuses a negative oom_score_adj), a local pause
	# image, config_path + hosts.toml for the plain-HTTP registry.
	cat >"$CONF/containerd.toml" <<EOF
version = 4
root = "$S/containerd/root"
state = "$S/containerd/state"
temp = "$S/containerd/tmp"
imports = []

[plugins]
  [plugins.'io.containerd.server.v1.grpc']
    address = "$CONTAINERD_SOCK"
  [plugins.'io.containerd.server.v1.ttrpc']
    address = "$CONTAINERD_SOCK.ttrpc"
  [plugins.'io.containerd.internal.v1.opt']
    path = "$S/containerd/opt"
  [plugins.'io.containerd.nri.v1.nri']
    disable = true
  [plugins.'io.containerd.image-verifier.v1.bindir']
    bin_dir = "$S/containerd/opt/image-verifier/bin"
  [plugins.'io.containerd.shim.v1.manager']
    socket_dir = "$SHIM_SOCKET_DIR"
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = "overlayfs"
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = "$PAUSE_IMAGE"
    [plugins.'io.containerd.cri.v1.images'.registry]
      config_path = "$CONF/certs.d"
  [plugins.'io.containerd.cri.v1.runtime']
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    cdi_spec_dirs = []
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ["/usr/lib/cni"]
      conf_dir = "$CONF/cni"
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = "runc"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        runtime_path = "$BIN/containerd-shim-runc-v2"
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = "$BIN/runc"
          Root = "$S/runc"
          SystemdCgroup = false
  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
EOF

	cat >"$CONF/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $PKI/kubelet.crt
tlsPrivateKeyFile: $PKI/kubelet.key
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
# This machine has hybrid cgroups (v1 controllers): without these the kubelet refuses to start.
cgroupDriver: cgroupfs
failCgroupV1: false
cgroupRoot: /$CGROUP_ROOT
failSwapOn: false
# No iptables chains of the kubelet's own (kube-proxy runs in nftables mode).
makeIPTablesUtilChains: false
podLogsDir: $S/pod-logs
volumePluginDir: $S/volume-plugins
clusterDomain: $CLUSTER_DOMAIN
resolvConf: /etc/resolv.conf
serializeImagePulls: false
registerNode: true
evictionHard:
  memory.available: 200Mi
  nodefs.available: 1Gi
  imagefs.available: 1Gi
EOF

	cat >"$CONF/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection:
  kubeconfig: $KCFG/kube-proxy.kubeconfig
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:$PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$PROXY_METRICS_PORT
nodePortAddresses: ["$NODE_IP/32"]
# Leave the host's conntrack settings alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
  udpTimeout: 0s
  udpStreamTimeout: 0s
EOF

	# Build pods use the Localhost profile kiln/kiln-seccomp.json (the controller's default
	# --seccomp-profile): containerd's default profile plus exactly the calls kiln needs.
	install -m 0644 "$REPO_ROOT/config/seccomp/kiln-seccomp.json" "$SECCOMP_DIR/kiln/kiln-seccomp.json"
}

# ---------------------------------------------------------------- network

make_bridge() {
	# The CNI bridge plugin adopts an existing bridge of this name. Making it now gives the
	# node its address before the API server and the kubelet bind to it.
	ip link add "$BRIDGE" type bridge || die "cannot create the bridge $BRIDGE"
	ip addr add "$NODE_IP/24" dev "$BRIDGE" || die "cannot give $BRIDGE the address $NODE_IP/24"
	ip link set "$BRIDGE" up || die "cannot bring $BRIDGE up"
}

# ---------------------------------------------------------------- cgroups

make_cgroups() {
	local d
	if [[ $CGROUP_MODE == unified ]]; then
		mkdir -p "/sys/fs/cgroup/$CGROUP_ROOT"
		return
	fi
	for d in /sys/fs/cgroup/*/; do
		d=${d%/}
		[[ $(stat -f -c %T "$d" 2>/dev/null) == cgroup* ]] || continue
		mkdir -p "$d/$CGROUP_ROOT"
		if [[ -f $d/cpuset.cpus ]]; then
			# A new v1 cpuset starts empty: give it the parent's cpus and memory nodes.
			[[ -s $d/$CGROUP_ROOT/cpuset.cpus && $(<"$d/$CGROUP_ROOT/cpuset.cpus") != "" ]] ||
				cat "$d/cpuset.cpus" >"$d/$CGROUP_ROOT/cpuset.cpus"
			[[ $(<"$d/$CGROUP_ROOT/cpuset.mems") != "" ]] || cat "$d/cpuset.mems" >"$d/$CGROUP_ROOT/cpuset.mems"
		fi
	done
}

# ---------------------------------------------------------------- daemons

# start NAME BINARY ARGS...: runs a daemon in its own session, detached from this shell, with
# a clean environment; logs to LOGS/NAME.log, pid in PIDS/NAME.pid.
start() {
	local name=$1 bin=$2
	shift 2
	mkdir -p "$LOGS" "$PIDS"
	[[ -x $bin ]] || die "$name: $bin is missing"
	readlink -f "$bin" >"$PIDS/$name.exe"
	setsid env -i PATH="$BIN:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" HOME=/root \
		"$bin" "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
	echo $! >"$PIDS/$name.pid"
	log "$name: started (pid $!, log $LOGS/$name.log)"
}

# wait_for NAME TIMEOUT DESCRIPTION COMMAND...: polls COMMAND until it succeeds; fails at once
# if daemon NAME died.
wait_for() {
	local name=$1 timeout=$2 what=$3 deadline=$((SECONDS + $2))
	shift 3
	until "$@" >/dev/null 2>&1; do
		if [[ -n $name ]] && ! pid_of "$name" >/dev/null; then
			tail_log "$name"
			die "$name exited while waiting for $what; see $LOGS/$name.log"
		fi
		if ((SECONDS >= deadline)); then
			[[ -n $name ]] && tail_log "$name"
			die "timed out after ${timeout}s waiting for $what${name:+; see $LOGS/$name.log}"
		fi
		sleep 0.3
	done
}

http_ok() { curl -fsS --max-time 2 -o /dev/null "$@"; }

start_tcpfwd() {
	mkdir -p "$S/bin"
	(cd "$REPO_ROOT" && CGO_ENABLED=0 go build -o "$S/bin/tcpfwd" ./test/cluster/tcpfwd) ||
		die "go build ./test/cluster/tcpfwd failed"
	start tcpfwd "$S/bin/tcpfwd" "$POD_REGISTRY=127.0.0.1:$REGISTRY_PORT"
}

start_etcd() {
	start etcd "$BIN/etcd" --name kiln --data-dir "$S/etcd" \
		--listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
		--advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
		--listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
		--initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
		--initial-cluster "kiln=http://127.0.0.1:$ETCD_PEER_PORT" \
		--logger zap --log-outputs stderr
}

start_apiserver() {
	start kube-apiserver "$BIN/kube-apiserver" \
		--etcd-servers "http://127.0.0.1:$ETCD_CLIENT_PORT" \
		--bind-address "$NODE_IP" --advertise-address "$NODE_IP" --secure-port "$API_PORT" \
		--tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
		--client-ca-file "$PKI/ca.crt" \
		--kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
		--kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
		--kubelet-certificate-authority "$PKI/ca.crt" \
		--kubelet-preferred-address-types InternalIP \
		--service-account-issuer "https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
		--service-account-key-file "$PKI/sa.pub" \
		--service-account-signing-key-file "$PKI/sa.key" \
		--service-cluster-ip-range "$SERVICE_CIDR" \
		--authorization-mode Node,RBAC \
		--enable-admission-plugins NodeRestriction \
		--allow-privileged=true \
		--profiling=false
}

start_containerd() {
	start containerd "$BIN/containerd" --config "$CONF/containerd.toml"
}

start_controller_manager() {
	start kube-controller-manager "$BIN/kube-controller-manager" \
		--kubeconfig "$KCFG/controller-manager.kubeconfig" \
		--authentication-kubeconfig "$KCFG/controller-manager.kubeconfig" \
		--authorization-kubeconfig "$KCFG/controller-manager.kubeconfig" \
		--bind-address 127.0.0.1 --secure-port "$KCM_PORT" \
		--service-account-private-key-file "$PKI/sa.key" \
		--root-ca-file "$PKI/ca.crt" \
		--use-service-account-credentials \
		--flex-volume-plugin-dir "$S/volume-plugins" \
		--service-cluster-ip-range "$SERVICE_CIDR" \
		--leader-elect=false \
		--profiling=false
}

start_scheduler() {
	start kube-scheduler "$BIN/kube-scheduler" \
		--kubeconfig "$KCFG/scheduler.kubeconfig" \
		--authentication-kubeconfig "$KCFG/scheduler.kubeconfig" \
		--authorization-kubeconfig "$KCFG/scheduler.kubeconfig" \
		--bind-address 127.0.0.1 --secure-port "$SCHED_PORT" \
		--leader-elect=false \
		--profiling=false
}

start_kube_proxy() {
	start kube-proxy "$BIN/kube-proxy" --config "$CONF/kube-proxy.yaml"
}

start_kubelet() {
	start kubelet "$BIN/kubelet" \
		--config "$CONF/kubelet.yaml" \
		--kubeconfig "$KCFG/kubelet.kubeconfig" \
		--root-dir "$KUBELET_ROOT" \
		--cert-dir "$PKI/kubelet-certs" \
		--hostname-override "$NODE_NAME" \
		--node-ip "$NODE_IP"
}

# ---------------------------------------------------------------- images

# build_images (run in the background): the pause image and kiln's builder and controller images,
# built by kiln and pushed to the test registry. Writes the image tag to S/images.tag.
build_images() {
	cd "$REPO_ROOT"
	make build >&2 || die "make build failed"
	bin/kiln build -q --source-date-epoch 0 -t "$PAUSE_IMAGE" --push \
		--build-arg "BASE=$REGISTRY/busybox:latest" test/cluster/pause >&2 ||
		die "kiln build of the pause image (test/cluster/pause) failed"
	# The tag names the binaries, so that a changed kiln gives new images and a new rollout.
	local tag
	tag=c-$(cat bin/kiln bin/kiln-controller | sha256sum | cut -c1-12)
	make images IMAGE_REPO="$IMAGE_REPO" VERSION="$tag" PUSH=1 >&2 || die "make images failed"
	echo "$tag" >"$S/images.tag"
}

# ---------------------------------------------------------------- deploy

# The project's own manifests (config/default), with the image names pointed at what
# build_images pushed. Nothing in config/ changes: the overlay lives in the state dir.
deploy() {
	local tag base
	tag=$(<"$S/images.tag")
	mkdir -p "$S/deploy"
	# kustomize takes a base only as a path relative to the kustomization.
	base=$(realpath --relative-to="$S/deploy" "$REPO_ROOT/config/default")
	cat >"$S/deploy/kustomization.yaml" <<EOF
# Generated by test/cluster/up.sh: kiln's config/default with this cluster's images.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $base
patches:
  - target: {group: apps, kind: Deployment, name: kiln-controller, namespace: kiln-system}
    patch: |-
      apiVersion: apps/v1
      kind: Deployment
      metadata: {name: kiln-controller, namespace: kiln-system}
      spec:
        template:
          spec:
            containers:
              - name: controller
                image: $IMAGE_REPO/controller:$tag
                env:
                  - name: KILN_BUILDER_IMAGE
                    value: $IMAGE_REPO/kiln:$tag
  # This cluster's registry, as pods see it, is plain HTTP.
  - target: {group: apps, kind: Deployment, name: kiln-controller, namespace: kiln-system}
    patch: |-
      - op: add
        path: /spec/template/spec/containers/0/args/-
        value: --insecure-registry=$POD_REGISTRY
EOF
	kubectl_admin apply -k "$S/deploy" >"$LOGS/deploy.log" 2>&1 ||
		{ tail -n 20 "$LOGS/deploy.log" >&2; die "kubectl apply -k $S/deploy failed; see $LOGS/deploy.log"; }
	log "deploy: applied config/default (images $IMAGE_REPO/{controller,kiln}:$tag)"
}

node_ready() {
	[[ $(kubectl_admin get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]
}

# ---------------------------------------------------------------- main

IMAGES_PID=
UP_STARTED=
UP_DONE=

# kill_tree PID: a process and all its descendants (the background image build).
kill_tree() {
	local child
	for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do kill_tree "$child"; done
	kill -TERM "$1" 2>/dev/null || true
}

on_exit() {
	local rc=$?
	[[ -n $IMAGES_PID ]] && kill -0 "$IMAGES_PID" 2>/dev/null && kill_tree "$IMAGES_PID"
	if [[ -n $UP_STARTED && -z $UP_DONE && $rc -ne 0 ]]; then
		log "the cluster is only partly up; its logs are in $LOGS; 'make cluster-down' removes it"
	fi
}

main() {
	trap on_exit EXIT
	preflight
	install_packages
	log "binaries: hack/kube/build.sh all (cached in /var/cache/kiln-kube)"
	BIN=$("$REPO_ROOT/hack/kube/build.sh" all | tail -n1) || die "hack/kube/build.sh all failed"
	[[ -x $BIN/kubelet && -x $BIN/runc && -x $BIN/etcd ]] || die "hack/kube/build.sh did not provide the binaries in '$BIN'"

	mkdir -p "$S" "$LOGS" "$PIDS"
	UP_STARTED=1
	echo "$BIN" >"$S/bin-dir"
	record_host

	log "registry and fixtures: test/setup.sh (log $LOGS/setup.log)"
	"$REPO_ROOT/test/setup.sh" >"$LOGS/setup.log" 2>&1 ||
		{ tail -n 20 "$LOGS/setup.log" >&2; die "test/setup.sh failed; see $LOGS/setup.log"; }

	log "images: building in the background (log $LOGS/images.log)"
	build_images >"$LOGS/images.log" 2>&1 &
	IMAGES_PID=$!

	make_pki
	write_configs
	make_bridge
	make_cgroups

	start_tcpfwd
	start_etcd
	start_containerd
	wait_for etcd 30 "etcd to answer" http_ok "http://127.0.0.1:$ETCD_CLIENT_PORT/health"
	start_apiserver
	wait_for kube-apiserver 90 "kube-apiserver to be ready" kubectl_admin get --raw /readyz
	log "kube-apiserver: ready"
	start_controller_manager
	start_scheduler
	start_kube_proxy
	wait_for containerd 30 "containerd's socket" test -S "$CONTAINERD_SOCK"
	start_kubelet

	wait_for kubelet 90 "node $NODE_NAME to be Ready" node_ready
	log "node $NODE_NAME: Ready"
	wait_for kube-controller-manager 60 "the default ServiceAccount" kubectl_admin -n default get serviceaccount default
	log "default ServiceAccount: present"

	if ! wait "$IMAGES_PID"; then
		tail -n 20 "$LOGS/images.log" >&2
		die "building the images failed; see $LOGS/images.log"
	fi
	IMAGES_PID=
	log "images: pushed ($(<"$S/images.tag"))"
	deploy
	if ! kubectl_admin -n kiln-system wait --for=condition=Available --timeout=120s deployment/kiln-controller >>"$LOGS/deploy.log" 2>&1; then
		kubectl_admin -n kiln-system get pods -o wide >&2 || true
		kubectl_admin -n kiln-system describe pods >"$LOGS/deploy-describe.log" 2>&1 || true
		die "the kiln-controller Deployment did not become Available; see $LOGS/deploy-describe.log and $LOGS/kubelet.log"
	fi
	log "kiln-controller: Available"

	cat >"$S/env" <<EOF
export KUBECONFIG=$ADMIN_KUBECONFIG
export KILN_CLUSTER_DIR=$S
export KILN_CLUSTER_BIN=$BIN
export KILN_CLUSTER_REGISTRY=$REGISTRY
export KILN_CLUSTER_POD_REGISTRY=$POD_REGISTRY
export KILN_CLUSTER_BUILDER_IMAGE=$IMAGE_REPO/kiln:$(<"$S/images.tag")
export KILN_CLUSTER_CONTROLLER_IMAGE=$IMAGE_REPO/controller:$(<"$S/images.tag")
export PATH=$BIN:\$PATH
EOF
	UP_DONE=1
	log "cluster up in ${SECONDS}s. Use it with:"
	log "  export KUBECONFIG=$ADMIN_KUBECONFIG   (kubectl: $BIN/kubectl; or: source $S/env)"
	log "  pods reach the test registry as $POD_REGISTRY (plain HTTP); the node pulls from $REGISTRY"
	log "  make cluster-down stops it and removes $S"
	echo "$ADMIN_KUBECONFIG"
}

main "$@"
