# SPDX-License-Identifier: BSD-2-Clause
"""The Docker backend: containers through the docker SDK.

backend (the Backend subclass) and spec (labels, mounts, limits: pure).
"""
