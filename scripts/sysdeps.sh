#!/usr/bin/env bash
# System packages for the optional features: FUSE mounting (pyfuse3 builds against libfuse3)
# and gocryptfs for the volume benchmark. Installs only when running as root with apt;
# elsewhere it says what is missing and the FUSE tests skip with that reason.
set -euo pipefail
need=()
pkg-config --exists fuse3 2>/dev/null || need+=(libfuse3-dev pkg-config)
command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "sysdeps: installing ${need[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
else
  echo "sysdeps: not root or no apt-get; FUSE support disabled (missing: ${need[*]})"
fi
