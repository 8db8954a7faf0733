#!/bin/sh
# setup-registry.sh: start the test registry on 127.0.0.1:5000 (if it is not up) and push the
# base images the corpus uses: localhost:5000/busybox:latest (made from Debian's busybox-static)
# and localhost:5000/debian:bookworm (mmdebstrap minbase, cached). Needs root, buildah, mmdebstrap.
# test/fixtures produces the same images for the real suite; this script is what the corpus
# expectations were verified against.
set -eu
state=${KILN_TEST_STATE:-/var/lib/kiln-test}
mkdir -p "$state/registry" "$state/cache"

if ! curl -sf http://127.0.0.1:5000/v2/ >/dev/null; then
	cat >"$state/registry.yml" <<CFG
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $state/registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:5000
CFG
	nohup docker-registry serve "$state/registry.yml" >"$state/registry.log" 2>&1 &
	echo $! >"$state/registry.pid"
	for _ in 1 2 3 4 5 6 7 8 9 10; do
		curl -sf http://127.0.0.1:5000/v2/ >/dev/null && break
		sleep 0.5
	done
fi

have() { skopeo inspect --tls-verify=false "docker://localhost:5000/$1" >/dev/null 2>&1; }

if ! have busybox:latest; then
	root=$(mktemp -d)
	trap 'rm -rf "$root"' EXIT
	mkdir -p "$root/bin" "$root/sbin" "$root/usr/bin" "$root/usr/sbin" "$root/etc" \
		"$root/tmp" "$root/home/app" "$root/root"
	cp /bin/busybox "$root/bin/busybox"
	for p in $(/bin/busybox --list-full); do
		[ "$p" = bin/busybox ] || ln -sf /bin/busybox "$root/$p"
	done
	chmod 1777 "$root/tmp"
	chmod 700 "$root/root"
	chown 1000:1000 "$root/home/app"
	printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' \
		'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' \
		'app:x:1000:1000:app:/home/app:/bin/sh' >"$root/etc/passwd"
	printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' 'app:x:1000:' >"$root/etc/group"
	tar -C "$root" --numeric-owner -cf "$state/cache/busybox-rootfs.tar" .
	c=$(buildah from scratch)
	buildah add "$c" "$state/cache/busybox-rootfs.tar" / >/dev/null
	buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		--cmd '["sh"]' "$c"
	buildah commit --rm "$c" kiln-fixture-busybox >/dev/null
	buildah push --tls-verify=false kiln-fixture-busybox docker://localhost:5000/busybox:latest
	buildah rmi kiln-fixture-busybox >/dev/null
fi

if ! have debian:bookworm; then
	deb="$state/cache/debian-bookworm.tar"
	[ -s "$deb" ] || mmdebstrap --variant=minbase --mode=unshare bookworm "$deb" \
		http://deb.debian.org/debian
	c=$(buildah from scratch)
	buildah add "$c" "$deb" / >/dev/null
	buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		--cmd '["bash"]' "$c"
	buildah commit --rm "$c" kiln-fixture-debian >/dev/null
	buildah push --tls-verify=false kiln-fixture-debian docker://localhost:5000/debian:bookworm
	buildah rmi kiln-fixture-debian >/dev/null
fi
