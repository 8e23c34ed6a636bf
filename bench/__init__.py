# SPDX-License-Identifier: BSD-2-Clause
"""Benchmarks, each a script run directly (python3 bench/NAME.py), and the modules they share:
sidebyside (alternating runs, medians, ratios) and the raw sides rawdocker, rawapptainer and
rawlibvirt."""
