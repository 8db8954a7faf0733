#!/usr/bin/env bash
# test/setup.sh: idempotent machine set-up for kiln's test suite.
#
# Installs the peer tools, creates the test users, builds the fixture images and
# starts the plain test registry on 127.0.0.1:5000. Safe to run any number of
# times; each step checks before it acts. Must run as root.
#
# Environment:
#   KILN_TEST_DEBIAN=1 (or CI=true)  also build the Debian bookworm fixture.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE_DIR=/var/lib/kiln-test
CACHE_DIR=/var/cache/kiln-test
REGISTRY_ADDR=127.0.0.1:5000
PACKAGES=(buildah skopeo umoci runc uidmap busybox-static docker-registry apache2-utils mmdebstrap git)

log() { printf 'setup: %s\n' "$*" >&2; }

require_root() {
	if [[ $(id -u) -ne 0 ]]; then
		log "must run as root (it installs packages and creates users); try: sudo $0"
		exit 1
	fi
}

install_packages() {
	local missing=()
	for p in "${PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	if ((${#missing[@]} == 0)); then
		log "packages: all present"
		return
	fi
	log "packages: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q </dev/null
	apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
	# The Debian package starts its own registry on :5000 with htpasswd auth; the
	# suite wants its own plain one there, so stop the packaged service.
	if command -v systemctl >/dev/null && systemctl is-active -q docker-registry 2>/dev/null; then
		systemctl disable --now docker-registry || true
	fi
}

# next_free_subid FILE prints the first id at or above 100000 that no range in FILE uses.
next_free_subid() {
	awk -F: 'BEGIN { n = 100000 } NF == 3 { e = $2 + $3; if (e > n) n = e } END { print n }' "$1"
}

ensure_user() {
	local user=$1
	if ! id "$user" >/dev/null 2>&1; then
		log "users: creating $user"
		# --system keeps useradd from allocating subordinate ids on its own.
		useradd --system --create-home --home-dir "/home/$user" --shell /bin/bash "$user"
	fi
	mkdir -p "/home/$user"
	chown "$user:$user" "/home/$user"
	chmod 0755 "/home/$user"
}

ensure_subids() {
	local user=$1 file
	for file in /etc/subuid /etc/subgid; do
		touch "$file"
		if ! grep -q "^$user:" "$file"; then
			local start
			start=$(next_free_subid "$file")
			log "users: $file: $user:$start:65536"
			echo "$user:$start:65536" >>"$file"
		fi
	done
}

drop_subids() {
	local user=$1 file
	for file in /etc/subuid /etc/subgid; do
		[[ -f $file ]] && sed -i "/^$user:/d" "$file"
	done
}

setup_users() {
	ensure_user kiln-sub
	ensure_subids kiln-sub
	ensure_user kiln-nosub
	drop_subids kiln-nosub
}

registry_up() {
	# The registry answers GET /v2/ with 200 when it runs without auth.
	(exec 3<>"/dev/tcp/${REGISTRY_ADDR%:*}/${REGISTRY_ADDR#*:}" &&
		printf 'GET /v2/ HTTP/1.0\r\nHost: %s\r\n\r\n' "$REGISTRY_ADDR" >&3 &&
		head -n1 <&3 | grep -q ' 200') 2>/dev/null
}

start_registry() {
	if registry_up; then
		log "registry: already answering on $REGISTRY_ADDR"
		return
	fi
	mkdir -p "$STATE_DIR/registry"
	cat >"$STATE_DIR/registry.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $STATE_DIR/registry
  delete:
    enabled: true
http:
  addr: $REGISTRY_ADDR
YAML
	log "registry: starting on $REGISTRY_ADDR (log: $STATE_DIR/registry.log)"
	setsid nohup docker-registry serve "$STATE_DIR/registry.yml" \
		>>"$STATE_DIR/registry.log" 2>&1 </dev/null &
	echo $! >"$STATE_DIR/registry.pid"
	for _ in $(seq 1 50); do
		registry_up && return
		sleep 0.2
	done
	log "registry: not answering GET /v2/ with 200 on $REGISTRY_ADDR; see $STATE_DIR/registry.log"
	tail -n 20 "$STATE_DIR/registry.log" >&2 || true
	log "registry: whatever holds port ${REGISTRY_ADDR#*:} (stop it if it is not the plain test registry):"
	ss -ltnp "sport = :${REGISTRY_ADDR#*:}" >&2 || true
	exit 1
}

main() {
	require_root
	mkdir -p "$STATE_DIR" "$CACHE_DIR"
	install_packages
	setup_users
	start_registry
	"$REPO_ROOT/test/fixtures/build.sh" busybox
	if [[ ${KILN_TEST_DEBIAN:-} == 1 || ${CI:-} == true ]]; then
		"$REPO_ROOT/test/fixtures/build.sh" debian
	fi
	log "done"
}

main "$@"
