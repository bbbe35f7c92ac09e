"""What a sealed pod's container needs from the engine that starts it (pure constants).

The image's entrypoint is ``sealpod run /bundle``. It stages the pod's mounts in a private
mount namespace, mounts the encrypted volumes with FUSE, then starts bubblewrap as the
workload's uid, which makes its own user, PID, IPC and UTS namespaces and mounts a fresh
``/proc`` there. So the *container* must let it: root inside the container with exactly the
capabilities below (every other one dropped, no privilege escalation), ``/dev/fuse``, and an
unmasked ``/proc`` (an engine's masked ``/proc`` paths make the kernel refuse a new proc mount
in a user namespace). The workload inside the sandbox runs as its own uid with no capabilities
at all. Kubernetes manifests (:mod:`sealpod.deploy.kube_pod`) and the podman test take these
from here, so the two never disagree; each was found necessary by removing it under podman.
"""

from __future__ import annotations

#: Linux capabilities (without the ``CAP_`` prefix, as Kubernetes and podman spell them):
#: SYS_ADMIN - the private mount namespace, its tmpfs and bind mounts, the FUSE mount(2) of a
#: volume (without it: "cannot make a private mount namespace");
#: SETUID, SETGID - start bubblewrap as the workload's uid:gid (without them: "cannot start
#: bubblewrap").
SANDBOX_CAPABILITIES: tuple[str, ...] = ("SETGID", "SETUID", "SYS_ADMIN")
#: podman/docker ``--security-opt`` values: no setuid gains, and /proc unmasked (Kubernetes:
#: ``procMount: Unmasked``, which needs ``hostUsers: false``).
PODMAN_SECURITY_OPTS: tuple[str, ...] = ("no-new-privileges", "unmask=/proc/*")
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
