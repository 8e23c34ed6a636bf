# SPDX-License-Identifier: BSD-2-Clause
"""Configuration: the option table, vac.conf and vac.d reading, checking, and Vacuum Pipes.

options (the table) -> check (each section's values) -> model (frozen objects) <- load (files)
and pipes (JSON documents, cache), merged into the whole configuration by assemble
(forcommand: the way every `vac` command loads it).
"""
