#!/usr/bin/env bash
# System packages for sealpod's features and tests, from Debian's registry. Installs them when
# running as root with apt-get; elsewhere it says what is missing and goes on (the tests that
# need a missing piece skip and say why). Each block adds what its feature needs to one list,
# installed in one apt-get call.
set -euo pipefail
missing=()
want_cmd() { command -v "$1" >/dev/null 2>&1 || missing+=("${@:2}"); }

# FUSE mounting of encrypted volumes (pyfuse3 builds against libfuse3).
pkg-config --exists fuse3 2>/dev/null || missing+=(libfuse3-dev pkg-config)
want_cmd fusermount3 fuse3

# sealpod run: the bubblewrap sandbox, libseccomp for its filter, and a static busybox that
# the runtime's tests put into their tiny images.
want_cmd bwrap bubblewrap
[ -e /usr/lib/x86_64-linux-gnu/libseccomp.so.2 ] || [ -e /usr/lib/aarch64-linux-gnu/libseccomp.so.2 ] \
  || missing+=(libseccomp2)
want_cmd busybox busybox-static
# The demo's service pod: a Debian rootfs with Python, built by mmdebstrap; curl is its client.
want_cmd mmdebstrap mmdebstrap
want_cmd curl curl
# sealpod catalog: each entry's rootfs is built by mmdebstrap from Debian packages (its e2e
# tests need it and bubblewrap, both listed above; bench/catalog_bench.py also uses the host's
# redis-benchmark and pgbench, which it does not install).
want_cmd mmdebstrap mmdebstrap

# sealpod image and its e2e test: mmdebstrap builds the runtime base; podman + runc load and run
# the image (runc: crun does not work on these machines). kubectl (for `kubectl kustomize`) is
# not installed here: Debian 12's kubernetes-client is kubectl 1.20, whose kustomize is too old
# for deploy/kubernetes; the Kustomize tests skip without a newer one.
want_cmd podman podman
want_cmd runc runc

if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "sysdeps: installing ${missing[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "sysdeps: not root or no apt-get; missing: ${missing[*]} (the features that need them are off, their tests skip)"
fi
