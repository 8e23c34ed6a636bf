# SPDX-License-Identifier: BSD-2-Clause
"""What vacd serves to a site's own monitoring: the Prometheus metrics endpoint. Servers here
only read (state on disk, vacd's own counters); they never call a backend or write state.
"""
