#!/usr/bin/env bash
# Installs what the test suite needs on a fresh machine and does nothing when it is already there:
# nftables (connection locks), iproute2 (namespaces), clang with its libFuzzer runtime (the
# libsoccr fuzz smoke in scripts/test-c.sh), strace (a fault test slows CRIU down with it), CRIU 4.2+
# (scripts/install-criu.sh).
# When everything is present it runs no apt command at all (a few `command -v` checks).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "prepare-test-host: not root; the suite needs root and will refuse to run" >&2
  exit 0
fi

updated=0
apt_install() {
  echo "prepare-test-host: installing $*"
  if [ "$updated" = 0 ]; then
    apt-get update -qq
    updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

need=()
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v clang >/dev/null 2>&1 || need+=(clang)
command -v strace >/dev/null 2>&1 || need+=(strace)
if [ ${#need[@]} -gt 0 ]; then
  apt_install "${need[@]}"
fi

# libFuzzer's runtime is not a hard dependency of Debian's clang (libclang-common-N-dev only
# recommends libclang-rt-N-dev), so a clang installed with --no-install-recommends lacks it.
# clang prints the bare file name when it cannot find the library.
fuzzer_lib="$(clang -print-file-name="libclang_rt.fuzzer-$(uname -m).a")"
if [ ! -e "$fuzzer_lib" ]; then
  clang_major="$(clang -dumpversion | cut -d. -f1)"
  apt_install "libclang-rt-${clang_major}-dev"
  fuzzer_lib="$(clang -print-file-name="libclang_rt.fuzzer-$(uname -m).a")"
  if [ ! -e "$fuzzer_lib" ]; then
    echo "prepare-test-host: libFuzzer runtime still missing after installing libclang-rt-${clang_major}-dev" >&2
    exit 1
  fi
fi

if [ -x scripts/install-criu.sh ]; then
  scripts/install-criu.sh --quiet
fi
