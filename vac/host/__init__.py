# SPDX-License-Identifier: BSD-2-Clause
"""Facts of the host Vac runs on: its name and processors, cgroups and process tables.

Shared by the backends that run processes on the host itself (Docker's cgroup accounting,
Apptainer).
"""
