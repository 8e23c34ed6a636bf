# SPDX-License-Identifier: BSD-2-Clause
"""The status pages rendered from vac.web's data: Jinja2 with autoescape and StrictUndefined,
so every string from a guest or a pipe is escaped and a template can never use a name the
data lacks. Everything is inline (CSS, SVG shapes): no script, no CDN, no web font; each page
refreshes itself with a meta refresh and works without JavaScript.
"""
from __future__ import annotations

import os
import re
import time
from typing import Any, Dict, Optional

import jinja2

TEMPLATES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
REFRESH_DEFAULT = 30
REFRESH_MIN = 5
LEVELS = {"ok": "HEALTHY", "warning": "WARNING", "failing": "FAILING"}
UNTIL_RE = re.compile(r"\b(until|at) (\d{9,11})\b")

_env: Optional[jinja2.Environment] = None


def environment() -> jinja2.Environment:
    global _env
    if _env is None:
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
                                 autoescape=True, undefined=jinja2.StrictUndefined,
                                 trim_blocks=True, lstrip_blocks=True)
        env.filters.update({"age": age, "utc": utc, "pct": pct, "size": size,
                            "clock": clock, "times": times})
        _env = env
    return _env


def age(seconds: Any) -> str:
    """12m03s, 3h05m, 2d04h; an em dash for none."""
    if not isinstance(seconds, (int, float)):
        return "\u2014"
    s = max(0, int(seconds))
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def utc(when: Any) -> str:
    """A time as 2026-12-01 10:22:03 UTC; an em dash for none."""
    if not isinstance(when, (int, float)) or isinstance(when, bool):
        return "\u2014"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when))


def clock(when: Any) -> str:
    """A time of day as 10:22:03 (UTC)."""
    if not isinstance(when, (int, float)) or isinstance(when, bool):
        return "\u2014"
    return time.strftime("%H:%M:%S", time.gmtime(when))


def times(text: Any) -> str:
    """A planner's reason with its Unix times ("until 1796122592") as times of day (UTC)."""
    return UNTIL_RE.sub(lambda m: f"{m.group(1)} {clock(int(m.group(2)))} UTC", str(text))


def pct(ratio: Any) -> str:
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool):
        return "\u2014"
    return f"{ratio * 100:.0f}%"


def size(count: Any) -> str:
    if not isinstance(count, int) or isinstance(count, bool):
        return ""
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return ""


def refresh_seconds(cycle_seconds: float, asked: Optional[int] = None) -> int:
    """The meta refresh: asked (0 turns it off), else the cycle's length within 5-30 s."""
    if asked is not None:
        return max(0, min(asked, 3600))
    return int(max(REFRESH_MIN, min(REFRESH_DEFAULT, cycle_seconds)))


def render(template: str, data: Dict[str, Any], refresh: int, title: str) -> str:
    """A page: one of factory, machine, slot, space, missing."""
    return environment().get_template(f"{template}.html.j2").render(
        data=data, refresh=refresh, title=title)


def factory_page(view: Dict[str, Any], refresh: int) -> str:
    level = LEVELS.get(view["health"]["level"], "?")
    return render("factory", view, refresh, f"{level} {view['factory']}: Vac factory")


def machine_page(view: Dict[str, Any], refresh: int) -> str:
    return render("machine", view, refresh, f"{view['machine']}: Vac machine")


def slot_page(view: Dict[str, Any], refresh: int) -> str:
    return render("slot", view, refresh, f"{view['slot']}: Vac slot")


def space_page(view: Dict[str, Any], refresh: int) -> str:
    return render("space", view, refresh, f"{view['space']}: Vac space")


def missing_page(path: str) -> str:
    return render("missing", {"path": path}, 0, "Not found")
