# SPDX-License-Identifier: BSD-2-Clause
"""What the libvirt integration tests need from the host: libvirt-python, root, the test guest."""
from __future__ import annotations

import os

GUEST = os.environ.get("VAC_TEST_GUEST", "/var/lib/vac-test/guest")


def guest_problem() -> str:
    """Why the libvirt tests cannot run here, or "" if nothing is missing."""
    try:
        import libvirt  # noqa: F401
    except ImportError:
        return "libvirt-python is not installed (scripts/ci/setup-python.sh)"
    if os.geteuid() != 0:
        return "needs root for qemu:///system"
    if not all(os.path.isfile(os.path.join(GUEST, f)) for f in ("vmlinuz", "initrd.img")):
        return f"no test guest in {GUEST} (scripts/ci/build-test-guest.sh)"
    return ""
