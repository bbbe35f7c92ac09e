#!/usr/bin/env bash
# System packages for the optional features: FUSE mounting (pyfuse3 builds against libfuse3)
# and gocryptfs for the volume benchmark. Installs only when running as root with apt;
# elsewhere it says what is missing and the FUSE tests skip with that reason.
set -euo pipefail
need=()
pkg-config --exists fuse3 2>/dev/null || need+=(libfuse3-dev pkg-config)
command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
if [ ${#need[@]} -gt 0 ]; then  # (no early exit: later blocks install their own packages)
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "sysdeps: installing ${need[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "sysdeps: not root or no apt-get; FUSE support disabled (missing: ${need[*]})"
  fi
fi

# --- deploy (sealpod image, podman e2e) -----------------------------------------------------
# mmdebstrap builds the runtime base of `sealpod image`; podman + runc load and run the image in
# tests/e2e/test_cli_image.py (runc: crun does not work on these machines). kubectl (for
# `kubectl kustomize`) is not installed here: Debian 12's kubernetes-client is kubectl 1.20,
# whose kustomize is too old for deploy/kubernetes; the Kustomize tests skip without a newer one.
deploy_need=()
command -v mmdebstrap >/dev/null 2>&1 || deploy_need+=(mmdebstrap)
command -v podman >/dev/null 2>&1 || deploy_need+=(podman)
command -v runc >/dev/null 2>&1 || deploy_need+=(runc)
if [ ${#deploy_need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "sysdeps: installing ${deploy_need[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${deploy_need[@]}" >/dev/null
  else
    echo "sysdeps: not root or no apt-get; image/podman tests will skip (missing: ${deploy_need[*]})"
  fi
fi
