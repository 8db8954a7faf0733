#!/bin/sh
# gen.sh: git does not keep hard links, so the runner runs this in the case directory before
# building: it (re)creates ctx/ with a file that has two hard links and one plain copy.
set -eu
cd "$(dirname "$0")"
rm -rf ctx
mkdir -p ctx/a ctx/b
echo "shared content" > ctx/a/one
ln ctx/a/one ctx/b/two
echo "shared content" > ctx/copy
