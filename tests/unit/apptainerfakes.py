# SPDX-License-Identifier: BSD-2-Clause
"""The Apptainer user and machine name of the Apptainer backend tests, and processes written
into a fake /proc."""
from __future__ import annotations

import pwd

USER = pwd.struct_passwd(("vacsngly", "x", 4242, 4242, "", "/nonexistent", "/bin/false"))
NAME = "f1-01.example.com"


def fake_process(proc_root, pid, start=5000, uid=4242, state="S", cgroup="/",
                 comm="starter (x) y"):
    d = proc_root / str(pid)
    d.mkdir(exist_ok=True)
    fields = [state, "1", str(pid), str(pid)] + ["0"] * 15 + [str(start)] + ["0"] * 20
    (d / "stat").write_text(f"{pid} ({comm}) " + " ".join(fields) + "\n")
    (d / "status").write_text(f"Name:\tx\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n")
    (d / "cgroup").write_text(f"4:memory:{cgroup}\n2:cpuacct:{cgroup}\n0::/\n")
