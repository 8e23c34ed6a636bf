# SPDX-License-Identifier: BSD-2-Clause
"""`vac squid-conf IN OUT` (reference item 99): the template IN, then for each factory of the
space (sorted, as configured) whose name resolves, `acl localnet src <ip>/32`, and for each
factory other than this one `cache_peer <ip> sibling 3128 3130 default`. OUT is rewritten
(atomically) only when its content changes, so its mtime tells when squid needs a reload."""
from __future__ import annotations

import argparse
import socket
import sys
import time
from typing import Callable, Optional, Sequence

from vac import fsutil
from vac.config.forcommand import load_for_command
from vac.errors import ConfigError, VacError

MAX_TEMPLATE_BYTES = 1024 * 1024
Resolver = Callable[[str], Optional[str]]


def resolve(name: str) -> Optional[str]:
    """The IPv4 address of a name, or None (as the original: unresolvable names are left out)."""
    try:
        return socket.gethostbyname(name)
    except (OSError, UnicodeError):
        return None


def render(template: str, factories: Sequence[str], this_factory: str,
           resolver: Resolver = resolve) -> str:
    lines = [template if template.endswith("\n") or not template else template + "\n"]
    for factory in sorted(factories):
        address = resolver(factory)
        if address is None:
            continue
        lines.append(f"acl localnet src {address}/32\n")
        if factory != this_factory:
            lines.append(f"cache_peer {address} sibling 3128 3130 default\n")
    return "".join(lines)


def _read_template(path: str) -> str:
    """The site's template (its own file, so a symlink is fine), at most 1 MiB."""
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read(MAX_TEMPLATE_BYTES + 1)
    if len(text) > MAX_TEMPLATE_BYTES:
        raise OSError(f"larger than {MAX_TEMPLATE_BYTES} bytes")
    return text


def write_if_changed(path: str, text: str) -> bool:
    """Replace path with text unless it already holds exactly that; True if written."""
    if fsutil.read_optional(path, MAX_TEMPLATE_BYTES * 2) == text:
        return False
    fsutil.atomic_write(path, text, mode=0o644)
    return True


def command(args: argparse.Namespace, resolver: Optional[Resolver] = None) -> int:
    try:
        config = load_for_command(args.config)
        template = _read_template(args.template)
    except ConfigError as e:
        print(f"vac squid-conf: configuration rejected: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"vac squid-conf: cannot read {args.template}: {e}", file=sys.stderr)
        return 1
    s = config.settings
    text = render(template, s.factories, s.factory_name, resolver or resolve)
    try:
        write_if_changed(args.output, text)
    except (OSError, VacError) as e:
        print(f"vac squid-conf: cannot write {args.output}: {e}", file=sys.stderr)
        return 1
    return 0
