# SPDX-License-Identifier: BSD-2-Clause
"""The one place Vac starts subprocesses: argv lists only, always a timeout."""
from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from vac.errors import ProcessError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Completed:
    argv: tuple
    returncode: int
    stdout: str
    stderr: str


def run(argv: Sequence[str], *, timeout: float, check: bool = True,
        env: Optional[Mapping[str, str]] = None, input_text: Optional[str] = None,
        cwd: Optional[str] = None) -> Completed:
    """Run argv (never through a shell) and wait at most `timeout` seconds.

    Raises:
        ProcessError: the program is missing, timed out, or (with check) exited non-zero.
    """
    argv = [str(a) for a in argv]
    log.debug("run %s", argv)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              env=dict(env) if env is not None else None, input=input_text,
                              cwd=cwd, check=False, stdin=None if input_text else
                              subprocess.DEVNULL)
    except FileNotFoundError as e:
        raise ProcessError(argv, None, reason="not found") from e
    except subprocess.TimeoutExpired as e:
        raise ProcessError(argv, None, reason=f"timed out after {timeout}s") from e
    except OSError as e:
        raise ProcessError(argv, None, reason=str(e)) from e
    done = Completed(tuple(argv), proc.returncode, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        raise ProcessError(argv, proc.returncode, proc.stdout, proc.stderr)
    return done
