#!/usr/bin/env bash
# test/cluster/down.sh (make cluster-down): stops the test cluster that up.sh started and removes
# everything it made: its processes (daemons, pod processes, containerd shims), mounts, network
# namespaces, the bridge, kube-proxy's nftables tables, the kubelet's cgroups, the sysctls it
# changed (put back), the CNI result cache entries, the /var/log/containers links, and finally the
# state dir ${KILN_CLUSTER_DIR:-/var/lib/kiln-cluster}. Safe to run any number of times, and
# after an up.sh that failed part-way. It leaves the test registry (test/setup.sh's) running and
# the images pushed to it.
set -euo pipefail

# shellcheck source=test/cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BIN=
[[ -f $S/bin-dir ]] && BIN=$(<"$S/bin-dir")
PROBLEMS=()
problem() {
	log "warning: $*"
	PROBLEMS+=("$*")
}

# alive PID: the process exists and is not a zombie (its parent, init, may reap it late).
alive() { readlink "/proc/$1/exe" >/dev/null 2>&1; }

# stop NAME...: SIGTERM to each daemon, then SIGKILL to those still running after 5 seconds.
stop() {
	local name pid i pids=() names=() left
	for name in "$@"; do
		pid=$(pid_of "$name") || continue
		kill -TERM "$pid" 2>/dev/null || true
		pids+=("$pid") names+=("$name")
	done
	((${#pids[@]} > 0)) || return 0
	for i in $(seq 1 50); do
		left=0
		for pid in "${pids[@]}"; do alive "$pid" && left=1; done
		((left)) || break
		sleep 0.1
	done
	for i in "${!pids[@]}"; do
		if alive "${pids[$i]}"; then
			log "${names[$i]}: still running 5s after SIGTERM; killing it"
			kill -KILL "${pids[$i]}" 2>/dev/null || true
		fi
	done
	for i in $(seq 1 20); do
		left=0
		for pid in "${pids[@]}"; do alive "$pid" && left=1; done
		((left)) || break
		sleep 0.1
	done
	log "stopped ${names[*]}"
}

# cgroup_dirs lists the cluster's cgroup directory in every hierarchy.
cgroup_dirs() {
	local d
	for d in /sys/fs/cgroup/"$CGROUP_ROOT" /sys/fs/cgroup/*/"$CGROUP_ROOT"; do
		[[ -d $d ]] && echo "$d"
	done
	return 0
}

# kill_pod_processes: every process in the kubelet's cgroups (the pods' processes, whatever
# namespaces they made), until none is left.
kill_pod_processes() {
	local round pids dirs
	mapfile -t dirs < <(cgroup_dirs)
	((${#dirs[@]} > 0)) || return 0
	for round in $(seq 1 50); do
		# Cgroups vanish while find walks them (their pods are dying): find then fails, and
		# under pipefail and set -e that must not end down.sh.
		pids=$({ find "${dirs[@]}" -name cgroup.procs -exec cat {} + 2>/dev/null || true; } | sort -u | tr '\n' ' ')
		[[ -n ${pids// /} ]] || return 0
		((round == 1)) && log "pods: killing $(wc -w <<<"$pids") processes"
		# shellcheck disable=SC2086
		kill -KILL $pids 2>/dev/null || true
		sleep 0.1
	done
	problem "processes remain in the cgroups ${dirs[*]}: $pids"
}

# ours PID: the process runs a binary of the cluster (the cache dir's, or the state dir's) and
# names the state dir on its command line.
ours() {
	local pid=$1 exe cmd
	exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
	[[ (-n $BIN && $exe == "$(readlink -f "$BIN")"/*) || $exe == "$S"/* ]] || return 1
	cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
	[[ $cmd == *"$S"* ]]
}

# kill_strays [BINARY]: containerd's shims (they outlive containerd) and anything else of ours
# whose pid file was lost; only those that run BINARY, when given.
kill_strays() {
	local only=${1:-} p pid found=()
	for p in /proc/[0-9]*; do
		pid=${p#/proc/}
		[[ $pid == "$$" ]] && continue
		ours "$pid" || continue
		[[ -z $only || $(readlink "/proc/$pid/exe") == "$only" ]] && found+=("$pid")
	done
	((${#found[@]} == 0)) && return 0
	log "killing ${#found[@]} leftover processes of the cluster${only:+ (${only##*/})}: ${found[*]}"
	kill -KILL "${found[@]}" 2>/dev/null || true
	sleep 0.2
}

# our_mounts: the mount points under the state dir, deepest first.
our_mounts() {
	findmnt -rn -o TARGET | awk -v p="$S" '$0 == p || index($0, p "/") == 1 { print length($0) " " $0 }' |
		sort -rn | cut -d' ' -f2-
}

unmount_all() {
	local round m mounts
	for round in 1 2 3 4 5; do
		mounts=$(our_mounts)
		[[ -n $mounts ]] || return 0
		((round == 1)) && log "unmounting $(wc -l <<<"$mounts") mounts under $S"
		while IFS= read -r m; do
			umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
		done <<<"$mounts"
	done
	mounts=$(our_mounts)
	[[ -z $mounts ]] || problem "mounts remain under $S: $(tr '\n' ' ' <<<"$mounts")"
}

remove_network() {
	if ip link show "$BRIDGE" >/dev/null 2>&1; then
		# Pod veths go with their network namespaces once nothing holds them; any left over are
		# removed with their bridge's ports.
		local veth
		for veth in $(ip -o link show master "$BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
			ip link del "$veth" 2>/dev/null || true
		done
		if ip link del "$BRIDGE"; then
			log "network: removed the bridge $BRIDGE"
		else
			problem "cannot remove the bridge $BRIDGE"
		fi
	fi
	local family
	for family in ip ip6; do
		if nft list table "$family" kube-proxy >/dev/null 2>&1; then
			if nft delete table "$family" kube-proxy; then
				log "network: removed nftables table $family kube-proxy"
			else
				problem "cannot remove nftables table $family kube-proxy"
			fi
		fi
	done
}

remove_cgroups() {
	local d
	for d in $(cgroup_dirs); do
		find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
		[[ -d $d ]] && problem "cannot remove the cgroup $d"
	done
	return 0
}

restore_sysctls() {
	[[ -f $BEFORE/sysctl ]] || return 0
	local line k v now
	while IFS= read -r line; do
		k=${line%%=*} v=${line#*=}
		now=$(sysctl -n "$k" 2>/dev/null) || continue
		if [[ $now != "$v" ]]; then
			if sysctl -q -w "$k=$v" >/dev/null; then
				log "sysctl: $k back to $v (was $now)"
			else
				problem "cannot restore sysctl $k=$v"
			fi
		fi
	done <"$BEFORE/sysctl"
}

# remove_outside_files: what components write outside the state dir whatever their config says.
remove_outside_files() {
	# libcni caches results in /var/lib/cni/results/<network>-<sandbox id>-<ifname>: ours are
	# those of our network, and those of containerd's loopback network for the same sandboxes.
	if [[ -d $CNI_CACHE ]]; then
		local f id
		for f in "$CNI_CACHE"/results/"$CNI_NETWORK"-*; do
			[[ -e $f ]] || continue
			id=${f#"$CNI_CACHE/results/$CNI_NETWORK-"}
			id=${id%-*}
			rm -f "$f" "$CNI_CACHE/results/cni-loopback-$id-lo"
		done
		[[ -e $BEFORE/cni-cache-existed ]] || find "$CNI_CACHE" -depth -type d -empty -delete 2>/dev/null || true
	fi
	# The kubelet links every container's log into /var/log/containers.
	if [[ -d /var/log/containers ]]; then
		find /var/log/containers -maxdepth 1 -type l -lname "$S/*" -delete 2>/dev/null || true
		[[ -e $BEFORE/var-log-containers-existed ]] || rmdir /var/log/containers 2>/dev/null || true
	fi
	# The kubelet's device manager socket has a fixed path.
	if [[ -e /var/lib/kubelet && ! -e $BEFORE/device-plugin-socket-existed ]]; then
		rm -f /var/lib/kubelet/device-plugins/kubelet.sock
		[[ -e $BEFORE/var-lib-kubelet-existed ]] || find /var/lib/kubelet -depth -type d -empty -delete 2>/dev/null || true
	fi
	if [[ -d /run/containerd && ! -e $BEFORE/run-containerd-existed ]]; then
		find /run/containerd -depth -type d -empty -delete 2>/dev/null || true
	fi
	return 0
}

main() {
	require_root
	check_state_dir
	if [[ ! -e $S ]] && ! ip link show "$BRIDGE" >/dev/null 2>&1 && [[ -z $(cgroup_dirs) ]]; then
		log "nothing to do: no $S, no bridge $BRIDGE, no cgroup $CGROUP_ROOT"
		return 0
	fi
	# Stop what creates or restarts pods first, then the pods, then the runtime and the control plane.
	stop kube-controller-manager kube-scheduler kubelet kube-proxy
	kill_pod_processes
	[[ -n $BIN ]] && kill_strays "$(readlink -f "$BIN/containerd-shim-runc-v2")" # before containerd
	stop containerd kube-apiserver tcpfwd
	stop etcd
	kill_strays
	unmount_all
	remove_network
	remove_cgroups
	restore_sysctls
	remove_outside_files
	if [[ -e $S ]]; then
		if [[ -n $(our_mounts) ]]; then
			problem "not removing $S: mounts remain under it"
		else
			rm -rf --one-file-system "$S" || problem "cannot remove $S"
		fi
	fi
	if ((${#PROBLEMS[@]} > 0)); then
		log "down with ${#PROBLEMS[@]} problems:"
		printf '  - %s\n' "${PROBLEMS[@]}" >&2
		exit 1
	fi
	log "cluster down: $S removed, nothing of it runs (${SECONDS}s)"
}

main "$@"
