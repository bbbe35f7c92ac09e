"""What a sealed pod's container needs from the engine that starts it (pure constants).

The image's entrypoint is ``sealpod run /bundle``. Outside an SGX enclave it builds its own
sandbox with bubblewrap (mount, PID, IPC and UTS namespaces, a read-only root) and mounts the
encrypted volumes with FUSE, so the *container* must let it: it runs as root inside the
container with exactly the capabilities below, every other one dropped, no privilege
escalation, and ``/dev/fuse``. The workload inside the sandbox runs as its own uid with no
capabilities at all. Kubernetes manifests (:mod:`sealpod.deploy.kube_pod`) and the podman test
take these lists from here, so the two never disagree.
"""

from __future__ import annotations

#: Linux capabilities (without the ``CAP_`` prefix, as Kubernetes and podman spell them):
#: SYS_ADMIN - new mount/PID/IPC/UTS namespaces, pivot_root, and the FUSE mount(2) of a volume;
#: SETUID, SETGID - drop from root to the workload's uid:gid inside the sandbox;
#: SYS_CHROOT - bubblewrap chroots into the new root after pivot_root.
SANDBOX_CAPABILITIES: tuple[str, ...] = ("SETGID", "SETUID", "SYS_ADMIN", "SYS_CHROOT")
#: The FUSE device the volume mounts need (only when the spec has volumes).
FUSE_DEVICE = "/dev/fuse"

#: Where things live inside the image.
BUNDLE_PATH = "/bundle"
SEALPOD_HOME = "/var/lib/sealpod"
VOLUME_DIR = f"{SEALPOD_HOME}/volumes"
ENTRYPOINT: tuple[str, ...] = ("sealpod", "run", BUNDLE_PATH)

#: Environment the image's config carries (``sealpod run`` reads the KMS URL from it when the
#: spec has no ``[kms] url``; Kubernetes passes the identity on as ``--kms-identity``).
ENV_KMS_URL = "SEALPOD_KMS_URL"
ENV_KMS_IDENTITY = "SEALPOD_KMS_IDENTITY"
ENV_HOME = "SEALPOD_HOME"

#: Labels (image config) and annotations (OCI manifest, Kubernetes pod template).
LABEL_MEASUREMENT = "org.sealpod.measurement"
LABEL_SIGNER = "org.sealpod.signer"
LABEL_TEE = "org.sealpod.tee"
