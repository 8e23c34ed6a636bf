# SPDX-License-Identifier: BSD-2-Clause
"""`vac cernvm-signature FILE`: print a CernVM image's signature check as JSON (§5.2.4)."""
from __future__ import annotations

import argparse
import json

from vac.backends.libvirt.signature import read_signature


def command(args: argparse.Namespace) -> int:
    found = read_signature(args.file, args.capath)
    print(json.dumps(found.as_dict(), indent=1, sort_keys=True))
    return 0 if found.verified else 1
