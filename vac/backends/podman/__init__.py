# SPDX-License-Identifier: BSD-2-Clause
"""The Podman backend: machines of model `podman` as containers of a rootful Podman, or of a
non-root user's rootless one (podman_user), through Podman's Docker-compatible API with the
docker SDK (the Docker backend's code, composed)."""
