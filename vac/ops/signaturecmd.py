# SPDX-License-Identifier: BSD-2-Clause
"""`vac cernvm-signature FILE`: print a CernVM image's signature check as JSON; exit 0 when the
signature verifies, 1 when not.

The check is the libvirt wing's own (the one that boots CernVM images reads it before each
boot), imported from there directly: the arrow goes down from ops to the backends, the wing's
code reads only the file, and no backend library is involved, so the registry is not needed."""
from __future__ import annotations

import argparse
import json

from vac.backends.libvirt.signature import read_signature


def command(args: argparse.Namespace) -> int:
    found = read_signature(args.file, args.capath)
    print(json.dumps(found.as_dict(), indent=1, sort_keys=True))
    return 0 if found.verified else 1
