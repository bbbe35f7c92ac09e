"""Deploying sealed pods and the KMS: runnable OCI images and Kubernetes manifests.

:mod:`.kube_common` holds the vocabulary both manifest writers share (names, labels, the
container security context, YAML output); :mod:`.kube_pod` writes a sealed pod's workload,
:mod:`.kube_kms` the key broker's; :mod:`.container` names what the image's entrypoint needs
from its engine (capabilities, devices, paths), for Kubernetes and podman alike;
:mod:`.image` writes the runnable image and :mod:`.base` builds its runtime base.
"""
