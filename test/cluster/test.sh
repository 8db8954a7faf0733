#!/usr/bin/env bash
# test/cluster/test.sh (make test-cluster): kiln's end-to-end suite on a real cluster. Brings the
# cluster up (up.sh), runs test/cluster/e2e against it, and always brings it down (down.sh): when
# up.sh fails part-way, when the suite fails, and when it is interrupted. It refuses to start
# when a cluster is already up, so that it never tears down a cluster it did not bring up (run
# the suite against that one with `go test -v ./test/cluster/e2e`, as root).
#
# The suite's output goes to stdout and to $KILN_E2E_LOG (default /var/tmp/kiln-test-cluster.log).
# When anything fails, the cluster's logs (every daemon's, the pods', and the controller's) are copied to
# ${KILN_E2E_LOG%.log}-logs/ before down.sh removes the state dir. KILN_E2E_TIMEOUT (default
# 30m) bounds the suite; GO names the go command.
set -euo pipefail

# shellcheck source=test/cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

GO=${GO:-go}
E2E_LOG=${KILN_E2E_LOG:-/var/tmp/kiln-test-cluster.log}
KEPT_LOGS=${E2E_LOG%.log}-logs

require_root
check_state_dir
running=()
for d in "${DAEMONS[@]}"; do
	pid_of "$d" >/dev/null && running+=("$d")
done
if ((${#running[@]} > 0)); then
	die "a cluster already runs from $S (${running[*]}): run the suite against it with 'go test -v ./test/cluster/e2e' (as root), or 'make cluster-down' first"
fi

# finish keeps the logs of a failed run and brings the cluster down, whatever happened.
# shellcheck disable=SC2317 # run by the EXIT trap
finish() {
	local rc=$?
	trap - EXIT INT TERM
	set +e
	if ((rc != 0)) && [[ -d $LOGS ]]; then
		rm -rf "$KEPT_LOGS"
		mkdir -p "$KEPT_LOGS"
		cp -r "$LOGS"/. "$KEPT_LOGS"/
		[[ -d $S/pod-logs ]] && cp -r "$S/pod-logs" "$KEPT_LOGS/pod-logs"
		if [[ -f $S/bin-dir ]]; then
			BIN=$(<"$S/bin-dir")
			kubectl_admin -n kiln-system logs deployment/kiln-controller >"$KEPT_LOGS/kiln-controller.log" 2>&1
		fi
		log "the cluster's logs are kept in $KEPT_LOGS"
	fi
	log "bringing the cluster down (down.sh)"
	if ! "$REPO_ROOT/test/cluster/down.sh"; then
		log "error: down.sh failed; see above ('make cluster-down' tries again)"
		((rc == 0)) && rc=1
	fi
	exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "bringing the cluster up (up.sh)"
"$REPO_ROOT/test/cluster/up.sh" >/dev/null
up_time=$SECONDS
log "cluster up in ${up_time}s; running the suite (test/cluster/e2e, log $E2E_LOG)"

cd "$REPO_ROOT"
suite_start=$SECONDS
rc=0
KILN_CLUSTER_E2E=1 "$GO" test -count=1 -v -timeout "${KILN_E2E_TIMEOUT:-30m}" ./test/cluster/e2e 2>&1 | tee "$E2E_LOG" || rc=$?
log "suite: exit $rc after $((SECONDS - suite_start))s (cluster-up took ${up_time}s; log $E2E_LOG)"
exit "$rc"
