# SPDX-License-Identifier: BSD-2-Clause
"""The factory cycle: observe the slots, plan (pure), then create, finish and destroy.

observe -> observed.Observed -> planner.plan (with shares) -> creation / finishing, driven by
factory.Factory over the backends of backendpool.
"""
