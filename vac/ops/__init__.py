# SPDX-License-Identifier: BSD-2-Clause
"""Operations: what a site's operator runs beside the factory cycle.

`vac doctor` (is this host ready, and what to fix), and the original's remaining commands:
`vac proxy-init`, `vac squid-conf`, `vac cernvm-signature`. `add_commands` puts the commands on
vac's parser; each handler imports its module only when run, so `vac --help` loads none of
their libraries.
"""
from __future__ import annotations

import argparse

from vac.paths import GRID_CA_DIR


def _doctor(args: argparse.Namespace) -> int:
    from vac.ops import doctor

    return doctor.command(args)


def _proxy_init(args: argparse.Namespace) -> int:
    from vac.ops import proxyinit

    return proxyinit.command(args)


def _squid_conf(args: argparse.Namespace) -> int:
    from vac.ops import squidconf

    return squidconf.command(args)


def _cernvm_signature(args: argparse.Namespace) -> int:
    from vac.ops import signaturecmd

    return signaturecmd.command(args)


def add_commands(subparsers) -> None:
    """Add doctor, proxy-init, squid-conf and cernvm-signature to vac's subcommands."""
    doctor = subparsers.add_parser("doctor", help="check this host and say what to fix")
    doctor.add_argument("--json", action="store_true", help="print the checks as JSON")
    doctor.set_defaults(func=_doctor)
    proxy = subparsers.add_parser("proxy-init", help="print a 12-hour X.509 proxy")
    proxy.add_argument("-c", "--cert", required=True, metavar="PATH", help="certificate (PEM)")
    proxy.add_argument("-k", "--key", required=True, metavar="PATH", help="its key (PEM)")
    proxy.add_argument("-l", "--legacy-proxy", action="store_true",
                       help="a Globus legacy proxy instead of RFC 3820")
    proxy.set_defaults(func=_proxy_init)
    squid = subparsers.add_parser("squid-conf", help="write a squid.conf for the space")
    squid.add_argument("template", metavar="IN", help="template squid.conf")
    squid.add_argument("output", metavar="OUT", help="squid.conf to write if changed")
    squid.set_defaults(func=_squid_conf)
    sig = subparsers.add_parser("cernvm-signature", help="verify a CernVM image's signature")
    sig.add_argument("file", metavar="FILE", help="the CernVM ISO image")
    sig.add_argument("--capath", metavar="DIR", default=GRID_CA_DIR,
                     help="CA certificates to verify the signer against")
    sig.set_defaults(func=_cernvm_signature)
