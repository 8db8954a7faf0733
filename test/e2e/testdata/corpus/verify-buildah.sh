#!/bin/bash
# verify-buildah.sh: build every corpus case with buildah (the oracle) and check its
# expectations: success cases must build and, when "run" is true, print "stdout" exactly;
# expectError cases must fail to build. Needs root, buildah, podman, runc, jq and the test
# registry (./setup-registry.sh). Usage: ./verify-buildah.sh [--update] [--as USER] [case-dir...]
# --update writes buildah's observed stdout into case.json (review before keeping it).
# --as USER builds rootless as USER (buildah --isolation chroot, user namespace from the
# subuid/subgid ranges) from a copy of the case owned by USER, pushes the image to
# localhost:5000/corpus-rootless and runs it as root.
# Cases with "diff": false are ones buildah cannot build or builds differently from Docker;
# they are reported as "buildah-deviates" rather than failures.
set -u
cd "$(dirname "$0")"
update=0
as=
while [ $# -gt 0 ]; do
	case $1 in
	--update) update=1; shift ;;
	--as) as=$2; shift 2 ;;
	*) break ;;
	esac
done
cases=("$@")
[ ${#cases[@]} -gt 0 ] || cases=([0-9][0-9]-*/)
fails=0
for c in "${cases[@]}"; do
	c=${c%/}
	j="$c/case.json"
	name=corpus-${c%%-*}
	mapfile -t args < <(jq -r '(.buildahArgs // []) + (.args // []) | .[]' "$j")
	experr=$(jq -r '.expectError // empty' "$j")
	diff=$(jq -r 'if has("diff") then .diff else (has("expectError")|not) end' "$j")
	log=$(mktemp)
	img=localhost/$name
	# build from a copy: buildah writes RUN --mount=type=bind,rw changes through to the
	# context, and a rootless user builds a context they own
	work=$(mktemp -d)
	cp -a "$c" "$work/ctx"
	if [ -f "$work/ctx/gen.sh" ]; then (cd "$work/ctx" && sh ./gen.sh); fi
	if [ -n "$as" ]; then
		img=localhost:5000/corpus-rootless:${c%%-*}
		chown -R "$as:" "$work"
		cmd=$(printf '%q ' buildah bud --isolation chroot --tls-verify=false -q -t "$img" "${args[@]}" .)
		su "$as" -s /bin/bash -c "cd $work/ctx && $cmd && buildah push -q \
			--tls-verify=false $img docker://$img && buildah rmi $img" >"$log" 2>&1
	else
		(cd "$work/ctx" && buildah bud --isolation chroot --tls-verify=false -q \
			-t "$img" "${args[@]}" .) >"$log" 2>&1
	fi
	rc=$?
	rm -rf "$work"
	if [ -n "$experr" ]; then
		if [ $rc -ne 0 ]; then
			echo "$c: ok (fails as expected; buildah: $(grep -m1 -i 'error' "$log" | cut -c1-150))"
		elif [ -n "$(jq -r '.why // empty' "$j")" ]; then
			echo "$c: buildah-deviates (builds; Docker fails)"
		else
			echo "$c: UNEXPECTED SUCCESS"; fails=$((fails + 1))
		fi
		rm -f "$log"; continue
	fi
	if [ $rc -ne 0 ]; then
		if [ "$diff" = false ]; then
			echo "$c: buildah-deviates (build fails: $(tail -1 "$log" | cut -c1-150))"
		else
			echo "$c: BUILD FAILED"; sed 's/^/    /' "$log" | tail -5; fails=$((fails + 1))
		fi
		rm -f "$log"; continue
	fi
	rm -f "$log"
	if [ "$(jq -r '.run // false' "$j")" = true ]; then
		got=$(podman run --rm --runtime runc --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
			--tls-verify=false "$img" 2>/dev/null)
		[ -z "$as" ] || podman rmi -f "$img" >/dev/null 2>&1
		want=$(jq -r '.stdout // ""' "$j")
		if [ "$got" = "$want" ]; then
			echo "$c: ok"
		elif [ $update = 1 ]; then
			jq --arg s "$got" '.stdout = $s' "$j" >"$j.tmp" && mv "$j.tmp" "$j"
			echo "$c: UPDATED"; printf '%s\n' "$got" | sed 's/^/    /'
		elif [ "$diff" = false ]; then
			echo "$c: buildah-deviates (stdout differs)"; printf '%s\n' "$got" | sed 's/^/    /'
		else
			echo "$c: STDOUT MISMATCH"; diff <(printf '%s\n' "$want") <(printf '%s\n' "$got") | sed 's/^/    /'
			fails=$((fails + 1))
		fi
	else
		echo "$c: ok (built)"
	fi
done
echo "failures: $fails"
[ $fails -eq 0 ]
