#!/usr/bin/env bash
# npm run build:prebuild (and npm pack, as prepack): prebuilds/<platform>-<arch>/node-criu.glibc.node,
# built by prebuildify (Node-API 8, stripped). node-gyp-build loads it when no build/ exists, so
# installing the packed tarball needs no compiler. It builds in a scratch copy because prebuildify
# runs `node-gyp rebuild` in its working directory and moves the result away: the checkout's build/
# (a development or Debug build) stays as it is. Only the vendored libsoccr goes into a prebuild
# (NODE_CRIU_LIBSOCCR and sanitizer flags are ignored here), so what ships is always MIT.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
scratch="$(mktemp -d "${TMPDIR:-/tmp}/node-criu-prebuild.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

cp -R "$root/binding.gyp" "$root/package.json" "$root/csrc" "$root/vendor" "$scratch/"
ln -s "$root/node_modules" "$scratch/node_modules"
unset NODE_CRIU_LIBSOCCR CFLAGS CXXFLAGS CPPFLAGS LDFLAGS

# node-gyp: npm's own (prebuildify spawns `node-gyp` from PATH; npm puts it there only inside scripts).
npm_root="$(dirname "$(readlink -f "$(command -v npm)")")/.."
export PATH="$npm_root/bin/node-gyp-bin:$PATH"
# The running node's headers when it has them (a distribution node): no download, works offline.
node_prefix="$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")"
if [ -z "${npm_config_nodedir:-}" ] && [ -f "$node_prefix/include/node/node_api.h" ]; then
  export npm_config_nodedir="$node_prefix"
fi
export npm_config_jobs="${npm_config_jobs:-max}"

target="$(node -p process.versions.node)"
(cd "$scratch" && node "$root/node_modules/prebuildify/bin.js" --napi --strip --tag-libc --target="$target" --cache="$scratch/cache" --quiet)
tuple="$(cd "$scratch/prebuilds" && ls)"
rm -rf "${root:?}/prebuilds/$tuple"
mkdir -p "$root/prebuilds"
cp -R "$scratch/prebuilds/$tuple" "$root/prebuilds/"
echo "prebuild: $(cd "$root" && ls prebuilds/"$tuple"/*.node)"
