# SPDX-License-Identifier: BSD-2-Clause
"""Vac: a logical-machine factory. Importing the package has no side effects."""

__version__ = "04.00.00"
