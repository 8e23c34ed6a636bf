# SPDX-License-Identifier: BSD-2-Clause
"""Is there a configuration at all? The "not configured yet" state, told apart from a rejected
configuration before anything is parsed for meaning.

- A file named with --config that does not exist: ConfigMissing naming it (never a fallback to
  the default files or to the default state directory).
- No default file (/etc/vac.conf, /etc/vac.d/*.conf, /var/run/vac.conf), or only files with no
  section at all (the RPM's /etc/vac.conf as installed, every line a comment): ConfigMissing,
  "not configured yet: edit /etc/vac.conf".
A file with sections is a configuration, right or wrong: the loader judges it.
"""
from __future__ import annotations

import configparser
import os
from typing import Sequence

from vac.errors import ConfigMissing
from vac.paths import CONFIG_FILES_DEFAULT

MAIN_FILE = CONFIG_FILES_DEFAULT[0]
NOT_CONFIGURED = f"not configured yet: edit {MAIN_FILE}"
ABSENT = f"{NOT_CONFIGURED} (it does not exist)"


def require(files: Sequence[str], explicit: bool) -> None:
    """Raise ConfigMissing when there is no configuration to read.

    Args:
        files: the files that will be read (vac.config.load.config_files).
        explicit: they were named with --config.
    """
    if explicit:
        require_named(files)
    elif not files:
        raise ConfigMissing(MAIN_FILE, ABSENT)
    if not any(_has_sections(path) for path in files):
        them = "it" if len(files) == 1 else "them"
        raise ConfigMissing(files[-1] if explicit else MAIN_FILE,
                            f"{', '.join(files)}: no section in {them} (the example as "
                            f"installed): {NOT_CONFIGURED}")


def require_named(files: Sequence[str]) -> None:
    """Raise ConfigMissing for a file named with --config that does not exist."""
    for path in files:
        if not os.path.lexists(path):
            raise ConfigMissing(path, f"--config {path}: no such file")


def _has_sections(path: str) -> bool:
    """True if the file has a section header, or cannot be read as INI (then the loader
    reports why: a broken file is a rejected configuration, not a missing one)."""
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f, source=path)
    except FileNotFoundError:
        return False
    except (OSError, configparser.Error, UnicodeDecodeError):
        return True
    return bool(parser.sections())
