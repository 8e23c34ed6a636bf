# SPDX-License-Identifier: BSD-2-Clause
"""Vac: a logical-machine factory. Importing the package has no side effects."""

# The one version string: setup.py reads it, scripts/build-rpm gives it to vac.spec and the
# RPM writes it to /var/lib/vac/VERSION; "Vac <version>" goes to user_data, HTTP and VacQuery.
__version__ = "4.0.0"
