# SPDX-License-Identifier: BSD-2-Clause
"""The Apptainer/Singularity backend: containers run as the non-root singularity_user.

backend (the Backend subclass, adoption, strays) and launch (argv, binds, preexec step: pure).
"""
