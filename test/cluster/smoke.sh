#!/usr/bin/env bash
# test/cluster/smoke.sh: a quick check of a cluster that up.sh started. Runs kiln's builder image
# in pods shaped like the controller's build pods (hostUsers: false, kiln as uid 0 of the pod's
# user namespace, every capability dropped but SETUID/SETGID/SETFCAP, no privilege escalation,
# the Localhost seccomp profile kiln/kiln-seccomp.json, the store in an emptyDir):
#   1. kiln doctor (and again with procMount: Unmasked);
#   2. kiln build of a busybox-based Dockerfile, pushed to the test registry;
#   3. the image it built, run as a pod.
# Output of each pod goes to $KILN_CLUSTER_DIR/logs/smoke-*.log; doctor's is printed.
set -euo pipefail

# shellcheck source=test/cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ -f $S/env ]] || die "no cluster in $S: run make cluster-up first"
# shellcheck disable=SC1091
source "$S/env"
BIN=$KILN_CLUSTER_BIN
BUILDER=$KILN_CLUSTER_BUILDER_IMAGE
NS=kiln-smoke
RUN_ID=$(date +%s)

k() { kubectl_admin -n "$NS" "$@"; }

# run_pod NAME TIMEOUT: applies the pod manifest on stdin, waits for it to end, saves its logs
# (every container) to LOGS/smoke-NAME.log, and fails unless it Succeeded.
run_pod() {
	local name=$1 timeout=$2 phase deadline
	k apply -f - >/dev/null
	deadline=$((SECONDS + timeout))
	while :; do
		phase=$(k get pod "$name" -o 'jsonpath={.status.phase}' 2>/dev/null || true)
		[[ $phase == Succeeded || $phase == Failed ]] && break
		if ((SECONDS >= deadline)); then
			k describe pod "$name" >"$LOGS/smoke-$name.describe" 2>&1 || true
			die "pod $name: still '$phase' after ${timeout}s; see $LOGS/smoke-$name.describe"
		fi
		sleep 1
	done
	k logs "$name" --all-containers --prefix >"$LOGS/smoke-$name.log" 2>&1 || true
	if [[ $phase != Succeeded ]]; then
		k describe pod "$name" >"$LOGS/smoke-$name.describe" 2>&1 || true
		sed 's/^/    /' "$LOGS/smoke-$name.log" >&2
		die "pod $name: $phase; logs in $LOGS/smoke-$name.log, description in $LOGS/smoke-$name.describe"
	fi
	log "pod $name: Succeeded (${SECONDS}s; log $LOGS/smoke-$name.log)"
}

# pod NAME PROCMOUNT CONTAINERS_YAML: a build-pod-shaped pod.
pod() {
	local name=$1 proc=$2 containers=$3
	cat <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $name
  namespace: $NS
spec:
  hostUsers: false
  restartPolicy: Never
  automountServiceAccountToken: false
  enableServiceLinks: false
  securityContext:
    runAsUser: 0
    runAsGroup: 0
    seccompProfile:
      type: Localhost
      localhostProfile: kiln/kiln-seccomp.json
  volumes:
    - name: store
      emptyDir: {sizeLimit: 2Gi}
    - name: workspace
      emptyDir: {}
${containers//PROCMOUNT/$proc}
EOF
}

container_security='      securityContext:
        privileged: false
        allowPrivilegeEscalation: false
        procMount: PROCMOUNT
        capabilities:
          drop: ["ALL"]
          add: ["SETUID", "SETGID", "SETFCAP"]'

doctor_pod() {
	pod "$1" "$2" "  containers:
    - name: doctor
      image: $BUILDER
      args: [doctor, --root, /var/lib/kiln/store]
      env:
        - {name: HOME, value: /var/lib/kiln/home}
        - {name: TMPDIR, value: /var/lib/kiln/tmp}
      volumeMounts:
        - {name: store, mountPath: /var/lib/kiln}
$container_security"
}

DOCKERFILE="FROM $KILN_CLUSTER_POD_REGISTRY/busybox:latest
RUN echo \"built by kiln in a hostUsers:false pod\" >/hello && chown 1000:1000 /hello && cat /proc/self/uid_map
USER 1000
CMD [\"sh\", \"-c\", \"cat /hello; id -u\"]"
OUT_IMAGE=$KILN_CLUSTER_POD_REGISTRY/kiln-smoke/hello:$RUN_ID

build_pod() {
	local name=$1 pad='            ' indented
	indented=$pad${DOCKERFILE//$'\n'/$'\n'$pad}
	pod "$name" Default "  initContainers:
    - name: fetch-source
      image: $BUILDER
      args: [source, --dest, /workspace/source, --dockerfile-from-env, KILN_DOCKERFILE]
      env:
        - name: KILN_DOCKERFILE
          value: |
$indented
      volumeMounts:
        - {name: workspace, mountPath: /workspace}
$container_security
  containers:
    - name: build
      image: $BUILDER
      args: [build, --root, /var/lib/kiln/store, --insecure-registry, $KILN_CLUSTER_POD_REGISTRY,
             --destination, $OUT_IMAGE, /workspace/source]
      env:
        - {name: HOME, value: /var/lib/kiln/home}
        - {name: TMPDIR, value: /var/lib/kiln/tmp}
      volumeMounts:
        - {name: workspace, mountPath: /workspace}
        - {name: store, mountPath: /var/lib/kiln}
$container_security"
}

run_image_pod() {
	cat <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $1
  namespace: $NS
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  containers:
    - name: hello
      image: $OUT_IMAGE
EOF
}

main() {
	kubectl_admin create namespace "$NS" --dry-run=client -o yaml | kubectl_admin apply -f - >/dev/null
	k delete pods --all --wait=false >/dev/null 2>&1 || true

	log "1. kiln doctor in a hostUsers: false pod (uid 0 in the pod's user namespace, Localhost seccomp kiln/kiln-seccomp.json)"
	doctor_pod doctor Default | run_pod doctor 120
	sed 's/^\[pod\/doctor\/doctor\] //' "$LOGS/smoke-doctor.log"
	log "   ... and with procMount: Unmasked"
	doctor_pod doctor-unmasked Unmasked | run_pod doctor-unmasked 120
	sed 's/^\[pod\/doctor-unmasked\/doctor\] //' "$LOGS/smoke-doctor-unmasked.log"

	log "2. kiln build of a busybox-based Dockerfile in such a pod, pushed to $OUT_IMAGE"
	local start=$SECONDS
	build_pod build | run_pod build 300
	log "   build pod took $((SECONDS - start))s from creation to Succeeded"
	grep -v '^\s*$' "$LOGS/smoke-build.log" | tail -n 15 >&2

	log "3. the built image, run as a pod"
	run_image_pod hello | run_pod hello 120
	local got want
	got=$(sed 's/^\[pod\/hello\/hello\] //' "$LOGS/smoke-hello.log")
	want=$'built by kiln in a hostUsers:false pod\n1000'
	[[ $got == "$want" ]] || die "the built image printed '$got', want '$want'"
	log "   it printed: $(tr '\n' ' ' <<<"$got")"

	k delete pods --all --wait=false >/dev/null
	log "smoke: all passed in ${SECONDS}s"
}

main "$@"
