# SPDX-License-Identifier: BSD-2-Clause
"""`vac proxy-init -c CERT -k KEY [-l]`: print a 12-hour limited X.509 proxy (PEM), as the
original did, made by the same code as user_data_proxy (vac.machine.x509proxy)."""
from __future__ import annotations

import argparse
import sys
import time

from vac.errors import UserDataError
from vac.machine.x509proxy import make_proxy

LIFETIME_SECONDS = 12 * 3600


def command(args: argparse.Namespace) -> int:
    now = time.time()
    try:
        pem = make_proxy(args.cert, args.key, int(now) + LIFETIME_SECONDS,
                         legacy=args.legacy_proxy, now=now)
    except UserDataError as e:
        print(f"vac proxy-init: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(pem)
    return 0
