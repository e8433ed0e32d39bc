#!/usr/bin/env bash
# Gives node-criu a CRIU (4.2 or newer) that works on the running kernel, and prints the path of an
# executable that runs it like `criu`:
#   - the system's criu, when it is 4.2+ and `criu check` passes; otherwise
#   - Debian's criu, pinned to one version (CRIU_VERSION below), from a private minimal Debian
#     root (debootstrap --variant=minbase), run from the host through that root's own dynamic
#     loader (chroot does not work for criu: "mnt: No parent found for mountpoint"). The root
#     also carries libcriu-dev (rpc.proto) and python3-pycriu, which the tests use as references.
#     debootstrap runs with --force-check-gpg against Debian's archive keyring (installed with apt
#     when missing): every package is checked against the signed Release file, whatever the
#     mirror's transport. Only x86_64 Debian hosts can build the root; elsewhere a system criu
#     4.2+ is required and the script says so before downloading anything.
#
# Cache layout (NODE_CRIU_CACHE_DIR, default /var/cache/node-criu):
#   root/        the private Debian root (absent when the system criu is used)
#   bin/criu     wrapper: `exec <loader> --library-path <libs> <criu> "$@"` (or exec system criu)
#   state        key=value lines (source, version, package, suite, verified, criu, installed);
#                written last, atomically
#   root/.node-criu-provenance  how the root was built (suite, mirror, keyring, gpg=verified, the
#                criu package version); a root without it (built unverified) is never used
#   build.log    debootstrap output of the last build
#   .lock        flock for concurrent runs; .build-*: in-progress builds (removed on any exit)
# A run with a valid cache only runs `bin/criu --version` (no network, no waiting on the lock).
# Builds go into .build-XXXXXX, are verified (criu --version >= 4.2, criu check, nftables network
# lock, rpc.proto) and only then renamed to root/, so an interrupted run never leaves a half root.
#
# Usage: install-criu.sh [--quiet] [--force] [--print-path] [--print-root]
#   (default)     install when needed; progress on stderr; print the criu path on stdout
#   --quiet       no progress and no path output (errors still go to stderr)
#   --force       ignore the cache (and the ready-made root): check the system criu again and
#                 rebuild the private root from scratch if it is needed
#   --print-path  install nothing: print the cached criu path, exit 3 if there is none
#   --print-root  install nothing: print the private root's directory, exit 3 if there is none
# Environment:
#   NODE_CRIU_CACHE_DIR      cache directory (default /var/cache/node-criu)
#   NODE_CRIU_USE_SYSTEM=0   never use the system criu (always the private root)
#   NODE_CRIU_ADOPT_ROOT     a ready-made root to verify and move into the cache instead of running
#                            debootstrap (default <cache>/sid-root.tmp; ignored with --force)
#   NODE_CRIU_DEBIAN_SUITE   default sid;  NODE_CRIU_DEBIAN_MIRROR default http://deb.debian.org/debian
#   NODE_CRIU_CRIU_VERSION   the pinned upstream version the private root must carry (default below)
#   NODE_CRIU_DEBIAN_KEYRING default /usr/share/keyrings/debian-archive-keyring.gpg
set -euo pipefail

MIN_VERSION=4.2
# The CRIU release the project is tested with; Debian's suite must carry exactly this version.
CRIU_VERSION=${NODE_CRIU_CRIU_VERSION:-4.2.1}
KEYRING=${NODE_CRIU_DEBIAN_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}
PROVENANCE=.node-criu-provenance
CACHE=${NODE_CRIU_CACHE_DIR:-/var/cache/node-criu}
SUITE=${NODE_CRIU_DEBIAN_SUITE:-sid}
MIRROR=${NODE_CRIU_DEBIAN_MIRROR:-http://deb.debian.org/debian}
USE_SYSTEM=${NODE_CRIU_USE_SYSTEM:-1}
ADOPT=${NODE_CRIU_ADOPT_ROOT:-$CACHE/sid-root.tmp}
PACKAGES=criu,libcriu-dev,python3-pycriu

QUIET=0 FORCE=0 MODE=install
for arg in "$@"; do
  case "$arg" in
    --quiet) QUIET=1 ;;
    --force) FORCE=1 ;;
    --print-path) MODE=print-path ;;
    --print-root) MODE=print-root ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "install-criu: unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

log() { if [ "$QUIET" = 0 ]; then echo "install-criu: $*" >&2; fi; }
die() { echo "install-criu: error: $*" >&2; exit 1; }

case "$CACHE" in
  /*) ;;
  *) die "NODE_CRIU_CACHE_DIR must be an absolute path: $CACHE" ;;
esac
# The wrapper embeds the path in single quotes.
case "$CACHE" in *"'"*|*$'\n'*) die "NODE_CRIU_CACHE_DIR must not contain quotes or newlines" ;; esac
CACHE=${CACHE%/}
ROOT=$CACHE/root
WRAPPER=$CACHE/bin/criu
STATE=$CACHE/state

# Runs the criu of root $1 through that root's loader, like the wrapper does.
root_criu() {
  local root=$1; shift
  "$root/usr/lib64/ld-linux-x86-64.so.2" --library-path "$root/usr/lib/x86_64-linux-gnu" "$root/usr/sbin/criu" "$@"
}

# Prints the version of the criu command "$@" ("4.2.1"), or fails.
criu_version_of() {
  local out
  out=$("$@" --version 2>/dev/null) || return 1
  out=$(printf '%s\n' "$out" | sed -n 's/^Version: *\([0-9][0-9.]*\).*/\1/p' | head -n1)
  [ -n "$out" ] || return 1
  printf '%s\n' "$out"
}

version_at_least() { # $1 >= $2
  [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]
}

state_get() { sed -n "s/^$1=//p" "$STATE" 2>/dev/null | head -n1; }

# The fast path: the cache describes a criu that still answers --version with 4.2+.
cache_valid() {
  [ -f "$STATE" ] && [ -x "$WRAPPER" ] || return 1
  local source version
  source=$(state_get source)
  if [ "$source" = root ]; then
    [ -x "$ROOT/usr/sbin/criu" ] && root_is_verified "$ROOT" || return 1
  fi
  version=$(criu_version_of "$WRAPPER") || return 1
  version_at_least "$version" "$MIN_VERSION"
}

provenance_get() { sed -n "s/^$2=//p" "$1/$PROVENANCE" 2>/dev/null | head -n1; }

# A root counts only when it records a GPG-verified build of the pinned criu.
root_is_verified() {
  [ "$(provenance_get "$1" gpg)" = verified ] && [ "$(provenance_get "$1" criu_version)" = "$CRIU_VERSION" ]
}

# The Debian package version of criu inside root $1 ("4.2.1-1"), from its dpkg database.
root_criu_package() {
  sed -n '/^Package: criu$/,/^$/s/^Version: //p' "$1/var/lib/dpkg/status" 2>/dev/null | head -n1
}

# Removes a directory tree that may still have debootstrap's mounts (proc, sys, ...) inside it.
remove_tree() {
  local dir=$1 mnt
  [ -e "$dir" ] || return 0
  # Deepest mount first; /proc/mounts escapes spaces as \040, which never appear in our names.
  awk -v d="$dir" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/mounts | sort -r |
    while read -r mnt; do umount -l "$mnt" 2>/dev/null || true; done
  rm -rf --one-file-system "$dir"
}

# Leftovers of a run that was killed (SIGKILL, power loss). Only call with the lock held: a live
# build (even one whose script was killed: debootstrap inherits the lock fd) holds it.
remove_leftovers() {
  local stale
  for stale in "$CACHE"/.build-* "$CACHE"/.old-*; do
    [ -e "$stale" ] || continue
    log "removing leftover $stale"
    remove_tree "$stale"
  done
}

has_leftovers() { compgen -G "$CACHE/.build-*" >/dev/null || compgen -G "$CACHE/.old-*" >/dev/null; }

case "$MODE" in
  print-path)
    cache_valid || { echo "install-criu: no installed criu in $CACHE (run install-criu.sh)" >&2; exit 3; }
    echo "$WRAPPER"; exit 0 ;;
  print-root)
    { cache_valid && [ "$(state_get source)" = root ]; } || { echo "install-criu: no private criu root in $CACHE" >&2; exit 3; }
    echo "$ROOT"; exit 0 ;;
esac

if [ "$FORCE" = 0 ] && cache_valid; then
  if has_leftovers && [ "$(id -u)" = 0 ]; then
    exec 9>"$CACHE/.lock"
    if flock -n 9; then remove_leftovers; fi
    exec 9>&-
  fi
  log "criu $(state_get version) ($(state_get source)) already installed"
  if [ "$QUIET" = 0 ]; then echo "$WRAPPER"; fi
  exit 0
fi

[ "$(id -u)" = 0 ] || die "must run as root (criu needs root; the cache is $CACHE)"
mkdir -p "$CACHE" "$CACHE/bin"
chmod 755 "$CACHE"

# One installer at a time; a second one waits and then normally finds the cache valid.
exec 9>"$CACHE/.lock"
flock -w 900 9 || die "timed out waiting for another install-criu.sh ($CACHE/.lock)"
if [ "$FORCE" = 0 ] && cache_valid; then
  log "criu $(state_get version) installed by a concurrent run"
  if [ "$QUIET" = 0 ]; then echo "$WRAPPER"; fi
  exit 0
fi

remove_leftovers

BUILD= DEBOOTSTRAP_PID=
stop_debootstrap() {
  [ -n "$DEBOOTSTRAP_PID" ] || return 0
  kill -TERM -- "-$DEBOOTSTRAP_PID" 2>/dev/null || true
  local i
  for i in $(seq 50); do kill -0 -- "-$DEBOOTSTRAP_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$DEBOOTSTRAP_PID" 2>/dev/null || true
  wait "$DEBOOTSTRAP_PID" 2>/dev/null || true
  DEBOOTSTRAP_PID=
}
cleanup() { stop_debootstrap; if [ -n "$BUILD" ]; then remove_tree "$BUILD"; fi; rm -f "$CACHE/bin/.criu.tmp" "$CACHE/.state.tmp" "$CACHE/.verify.err"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

write_atomically() { # $1 = target, stdin = content, $2 = mode
  local tmp="$(dirname "$1")/.$(basename "$1").tmp"
  cat >"$tmp"
  chmod "$2" "$tmp"
  mv -f "$tmp" "$1"
}

finish() { # $1 = source (root|system), $2 = version, $3 = criu path
  local package=system suite=system verified=system
  if [ "$1" = root ]; then
    package=$(provenance_get "$ROOT" criu_package) suite=$(provenance_get "$ROOT" suite) verified=gpg
  fi
  write_atomically "$STATE" 644 <<EOF
source=$1
version=$2
package=$package
suite=$suite
verified=$verified
criu=$3
installed=$(date -u +%Y-%m-%dT%H:%M:%SZ)
EOF
  log "criu $2 ($1) ready: $WRAPPER"
  if [ "$QUIET" = 0 ]; then echo "$WRAPPER"; fi
  exit 0
}

# --- 1. the system criu --------------------------------------------------------------------
if [ "$USE_SYSTEM" != 0 ]; then
  system_criu=$(command -v criu 2>/dev/null || true)
  if [ -n "$system_criu" ] && [ "$system_criu" != "$WRAPPER" ]; then
    if version=$(criu_version_of "$system_criu") && version_at_least "$version" "$MIN_VERSION" &&
      "$system_criu" check >/dev/null 2>&1; then
      log "using the system criu $version ($system_criu)"
      write_atomically "$WRAPPER" 755 <<EOF
#!/bin/sh
# Written by node-criu scripts/install-criu.sh: the system criu passed its check.
exec '$system_criu' "\$@"
EOF
      finish system "$version" "$system_criu"
    fi
    log "system criu $system_criu is not usable (version ${version:-unknown}, need $MIN_VERSION+ and a passing criu check)"
  fi
fi

# --- 2. the private Debian root ------------------------------------------------------------
# Prints the criu version of root $1 when it is complete and works here, else fails with a reason.
verify_root() {
  local root=$1 version
  [ -x "$root/usr/sbin/criu" ] || { echo "no usr/sbin/criu" >&2; return 1; }
  [ -f "$root/$PROVENANCE" ] || { echo "no record of a verified build ($PROVENANCE)" >&2; return 1; }
  [ "$(provenance_get "$root" gpg)" = verified ] || { echo "its packages were not GPG-verified" >&2; return 1; }
  [ "$(provenance_get "$root" criu_version)" = "$CRIU_VERSION" ] ||
    { echo "it carries criu $(provenance_get "$root" criu_version), not the pinned $CRIU_VERSION" >&2; return 1; }
  [ -e "$root/usr/lib64/ld-linux-x86-64.so.2" ] || { echo "no loader" >&2; return 1; }
  [ -f "$root/usr/include/criu/rpc.proto" ] || { echo "no usr/include/criu/rpc.proto (libcriu-dev)" >&2; return 1; }
  [ -d "$root/usr/lib/python3/dist-packages/pycriu" ] || { echo "no pycriu (python3-pycriu)" >&2; return 1; }
  version=$(criu_version_of root_criu "$root") || { echo "criu --version failed" >&2; return 1; }
  version_at_least "$version" "$MIN_VERSION" || { echo "criu $version is older than $MIN_VERSION" >&2; return 1; }
  [ "$version" = "$CRIU_VERSION" ] || { echo "criu $version is not the pinned $CRIU_VERSION" >&2; return 1; }
  root_criu "$root" check >/dev/null 2>&1 || { echo "criu check failed" >&2; return 1; }
  root_criu "$root" check --feature network_lock_nftables >/dev/null 2>&1 ||
    { echo "criu has no nftables network lock (libnftables)" >&2; return 1; }
  printf '%s\n' "$version"
}

install_root() { # $1 = verified root directory inside $CACHE (moved into place), $2 = version
  local old=
  if [ "$1" != "$ROOT" ]; then
    if [ -e "$ROOT" ]; then old=$CACHE/.old-$$; mv "$ROOT" "$old"; fi
    mv "$1" "$ROOT"
    BUILD=
  fi
  write_atomically "$WRAPPER" 755 <<EOF
#!/bin/sh
# Written by node-criu scripts/install-criu.sh: Debian's criu from a private root, run through that
# root's own loader (a chroot does not work for criu). exec keeps the pid and every inherited fd.
R='$ROOT'
exec "\$R/usr/lib64/ld-linux-x86-64.so.2" --library-path "\$R/usr/lib/x86_64-linux-gnu" "\$R/usr/sbin/criu" "\$@"
EOF
  if [ -n "$old" ]; then remove_tree "$old"; fi
  criu_version_of "$WRAPPER" >/dev/null || die "the wrapper $WRAPPER does not run criu"
  finish root "$2" "$ROOT/usr/sbin/criu"
}

# A root already in place (for example, the state file was lost): verify and keep it.
if [ "$FORCE" = 0 ] && [ -d "$ROOT" ]; then
  if version=$(verify_root "$ROOT" 2>/dev/null); then
    log "keeping the existing root $ROOT"
    install_root "$ROOT" "$version"
  fi
  log "the existing root $ROOT is not usable; rebuilding"
fi

# A ready-made root (same debootstrap command, built elsewhere): verify, then move it in.
if [ "$FORCE" = 0 ] && [ -d "$ADOPT" ] && [ ! -L "$ADOPT" ]; then
  if version=$(verify_root "$ADOPT" 2>"$CACHE/.verify.err"); then
    if [ "$(stat -c %d "$ADOPT")" = "$(stat -c %d "$CACHE")" ]; then
      log "adopting the ready-made root $ADOPT (criu $version)"
      BUILD=$CACHE/.build-adopt-$$
      mv "$ADOPT" "$BUILD"
      # Keep the old path working for anyone who still runs criu through it.
      if [ "$(dirname "$ADOPT")" = "$CACHE" ]; then ln -s root "$ADOPT"; fi
      install_root "$BUILD" "$version"
    fi
    log "$ADOPT is on another filesystem; not adopting it"
  else
    log "not adopting $ADOPT: $(tail -n1 "$CACHE/.verify.err")"
  fi
  rm -f "$CACHE/.verify.err"
fi

# Everything below downloads: first make sure this host can build and run the root at all.
arch=$(uname -m)
[ "$arch" = x86_64 ] ||
  die "no usable system criu, and the private CRIU root is built for x86_64 only (this host is $arch): install CRIU $MIN_VERSION+ from your distribution, or set CRIU_PATH"
if [ ! -f /etc/debian_version ] || ! command -v apt-get >/dev/null 2>&1; then
  die "no usable system criu, and this host is not Debian (no /etc/debian_version or apt-get), so the private CRIU root cannot be built: install CRIU $MIN_VERSION+ from your distribution, or set CRIU_PATH"
fi

apt_needed=()
command -v debootstrap >/dev/null 2>&1 || apt_needed+=(debootstrap)
if [ ! -s "$KEYRING" ]; then
  [ -z "${NODE_CRIU_DEBIAN_KEYRING:-}" ] || die "NODE_CRIU_DEBIAN_KEYRING=$KEYRING does not exist"
  apt_needed+=(debian-archive-keyring)
fi
if [ ${#apt_needed[@]} -gt 0 ]; then
  log "installing ${apt_needed[*]} with apt-get"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_needed[@]}" >/dev/null
fi
[ -s "$KEYRING" ] || die "Debian's archive keyring $KEYRING is missing; cannot verify packages"

BUILD=$(mktemp -d "$CACHE/.build-XXXXXX")
chmod 755 "$BUILD"
log "building a Debian $SUITE root with criu in $BUILD (debootstrap, about a minute; log: $CACHE/build.log)"
# In its own process group and waited for in the background, so that an interrupt runs our trap
# at once and stops debootstrap with all its children before the tree is removed.
setsid debootstrap --force-check-gpg --keyring="$KEYRING" --variant=minbase --include="$PACKAGES" \
  "$SUITE" "$BUILD" "$MIRROR" >"$CACHE/build.log" 2>&1 &
DEBOOTSTRAP_PID=$!
if ! wait "$DEBOOTSTRAP_PID"; then
  DEBOOTSTRAP_PID=
  tail -n 20 "$CACHE/build.log" >&2
  die "debootstrap failed (full log: $CACHE/build.log)"
fi
DEBOOTSTRAP_PID=
# The package cache is not needed to run criu.
rm -rf "${BUILD:?}"/var/cache/apt/archives/*.deb
grep -q '^I: Valid Release signature' "$CACHE/build.log" ||
  die "debootstrap did not report a valid Release signature (log: $CACHE/build.log)"
package=$(root_criu_package "$BUILD")
[ -n "$package" ] || die "the new root has no criu package in its dpkg database"
upstream=${package#*:}
upstream=${upstream%%-*}
[ "$upstream" = "$CRIU_VERSION" ] ||
  die "Debian $SUITE now ships criu $package, but node-criu pins $CRIU_VERSION; set NODE_CRIU_CRIU_VERSION=$upstream to accept it (untested), or NODE_CRIU_DEBIAN_SUITE to a suite that has $CRIU_VERSION"
cat >"$BUILD/$PROVENANCE" <<EOF
suite=$SUITE
mirror=$MIRROR
keyring=$KEYRING
gpg=verified
criu_package=$package
criu_version=$upstream
built=$(date -u +%Y-%m-%dT%H:%M:%SZ)
EOF
if ! version=$(verify_root "$BUILD" 2>"$CACHE/.verify.err"); then
  reason=$(tail -n1 "$CACHE/.verify.err"); rm -f "$CACHE/.verify.err"
  die "the new root does not work here: $reason"
fi
rm -f "$CACHE/.verify.err"
install_root "$BUILD" "$version"
