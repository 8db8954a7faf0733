#!/bin/sh
# gen.sh: makes the committed archives. The runner may run it before building: it is
# idempotent and its output is byte-identical to the committed files.
# Entries are owned 0:0 with fixed mtimes so the archives are reproducible.
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/pkg/bin" "$tmp/pkg/private"
printf 'payload\n' >"$tmp/pkg/data.txt"
printf '#!/bin/sh\necho tool\n' >"$tmp/pkg/bin/tool"
printf 'secret\n' >"$tmp/pkg/private/key"
ln "$tmp/pkg/data.txt" "$tmp/pkg/hardlink.txt"
ln -s data.txt "$tmp/pkg/symlink.txt"
chmod 755 "$tmp/pkg/bin/tool"
chmod 750 "$tmp/pkg/private"
chmod 600 "$tmp/pkg/private/key"
opts="--owner=0 --group=0 --numeric-owner --mtime=2020-01-01T00:00:00Z --sort=name --format=gnu"
tar $opts -C "$tmp" -cf archive.tar pkg
tar $opts -C "$tmp" -cf - pkg | gzip -n -9 >archive.tar.gz
printf 'not a tar, only gzip\n' | gzip -n -9 >plain.txt.gz
