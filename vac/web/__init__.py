# SPDX-License-Identifier: BSD-2-Clause
"""What vacd serves to a site's own monitoring: the Prometheus metrics endpoint and the status
page with its JSON API. Servers here only read (state on disk, the census, vacd's own
counters); they never call a backend or write state.
"""
