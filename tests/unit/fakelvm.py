# SPDX-License-Identifier: BSD-2-Clause
"""A fake LVM for the unit tests: a runner with subp.run's signature that answers vgs, lvs,
lvcreate and lvremove from one volume group held in memory (and records mkfs.ext4, mount and
every other command without running it). A plain helper, imported by name."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Set

from vac.errors import ProcessError
from vac.subp import Completed

MIB = 1024 * 1024


@dataclass
class FakeVolume:
    size: int
    attr: str = "-wi-a-----"
    segtype: str = "linear"
    pool: str = ""
    percent: str = ""


class FakeLvm:
    """One volume group `vg` of `size` bytes in `extent`-byte extents."""

    def __init__(self, vg: str = "vg0", size: int = 1000 * 4 * MIB, extent: int = 4 * MIB,
                 volumes: Optional[Dict[str, FakeVolume]] = None):
        self.vg = vg
        self.size = size
        self.extent = extent
        self.volumes: Dict[str, FakeVolume] = dict(volumes or {})
        self.calls: List[List[str]] = []
        self.busy: Set[str] = set()        # lvremove refuses these (in use)
        self.fail: Set[str] = set()        # commands (argv[0]) that exit 1

    def add_pool(self, name: str = "vac_thin_pool", size: int = 500 * 4 * MIB,
                 percent: str = "25.00") -> None:
        self.volumes[name] = FakeVolume(size, "twi-aotz--", "thin-pool", "", percent)

    def commands(self, program: str) -> List[List[str]]:
        return [argv for argv in self.calls if argv[0] == program]

    def __call__(self, argv, timeout: float, check: bool = True, **_kw) -> Completed:
        argv = [str(a) for a in argv]
        assert timeout > 0
        self.calls.append(argv)
        if argv[0] in self.fail:
            return self._done(argv, 1, "", f"  {argv[0]} failed", check)
        handler = {"vgs": self._vgs, "lvs": self._lvs, "lvcreate": self._lvcreate,
                   "lvremove": self._lvremove}.get(argv[0])
        if handler is None:
            return Completed(tuple(argv), 0, "", "")
        return handler(argv, check)

    def _done(self, argv, rc: int, out: str, err: str, check: bool) -> Completed:
        if rc and check:
            raise ProcessError(argv, rc, out, err)
        return Completed(tuple(argv), rc, out, err)

    def _missing_vg(self, argv, check: bool) -> Completed:
        return self._done(argv, 5, "", f'  Volume group "{argv[-1]}" not found', check)

    def _vgs(self, argv, check: bool) -> Completed:
        if argv[-1] != self.vg:
            return self._missing_vg(argv, check)
        if "vg_name" in argv:
            return self._done(argv, 0, f"  {self.vg}\n", "", check)
        return self._done(argv, 0, f"  {self.size}|{self.extent}\n", "", check)

    def _lvs(self, argv, check: bool) -> Completed:
        if argv[-1] != self.vg:
            return self._missing_vg(argv, check)
        lines = [f"  {n}|{v.size}|{v.attr}|{v.segtype}|{v.pool}|{v.percent}"
                 for n, v in sorted(self.volumes.items())]
        return self._done(argv, 0, "".join(line + "\n" for line in lines), "", check)

    def _lvcreate(self, argv, check: bool) -> Completed:
        name = argv[argv.index("--name") + 1]
        if name in self.volumes:
            return self._done(argv, 5, "", f'  Logical Volume "{name}" already exists', check)
        where = argv[-1]
        if "--virtualsize" in argv:
            size = int(argv[argv.index("--virtualsize") + 1].rstrip("b"))
            vg, _, pool = where.partition("/")
            assert self.volumes[pool].segtype == "thin-pool"
            self.volumes[name] = FakeVolume(size, "Vwi-a-tz--", "thin", pool, "0.00")
        else:
            size = int(argv[argv.index("--size") + 1].rstrip("b"))
            vg = where
            self.volumes[name] = FakeVolume(size)
        assert vg == self.vg and size % self.extent == 0, argv
        return self._done(argv, 0, f'  Logical volume "{name}" created.\n', "", check)

    def _lvremove(self, argv, check: bool) -> Completed:
        vg, _, name = argv[-1].partition("/")
        if vg != self.vg or name not in self.volumes:
            return self._done(argv, 5, "", f'  Failed to find logical volume "{argv[-1]}"',
                              check)
        if name in self.busy:
            return self._done(argv, 5, "", f"  Logical volume {argv[-1]} contains a "
                                           "filesystem in use.", check)
        del self.volumes[name]
        return self._done(argv, 0, f'  Logical volume "{name}" successfully removed.\n', "",
                          check)
