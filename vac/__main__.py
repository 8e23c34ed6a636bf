# SPDX-License-Identifier: BSD-2-Clause
"""python -m vac runs the vac command."""
from vac.cli import main

raise SystemExit(main())
