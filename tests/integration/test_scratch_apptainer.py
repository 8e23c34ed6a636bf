# SPDX-License-Identifier: BSD-2-Clause
"""An Apptainer machine's bounded scratch (issue 29), as root starting containers as
singularity_user: /scratch is the machine's own file system of disk_gb_per_processor x
processors, writable by the user; a payload writing past it gets ENOSPC there and ends with its
own message, its neighbour keeps writing, destroy and release_leftovers remove it; its /tmp and
/var/tmp (Apptainer's --workdir) are in the scratch too."""
from __future__ import annotations

import os

import pytest
import scratchpool
from apptainer_backend_env import Env
from apptainer_env import require_root, require_usable

from vac.machine import scratch
from vac.machine.directory import MachineState

pytestmark = [pytest.mark.apptainer, pytest.mark.root]

GB = 10 ** 9
FILL = r"""
O=/tmp/joboutputs
cat /tmp/jobfeatures/scratch_limit_bytes > $O/limit
if dd if=/dev/zero of=/scratch/fill bs=1M count=1500 2> $O/dd.err; then
  echo "500 the scratch took 1500 MB" > $O/shutdown_message; exit 1
fi
grep -q "No space left on device" $O/dd.err && echo enospc > $O/result
echo "300 payload: scratch full (ENOSPC) as expected" > $O/shutdown_message
"""
NEIGHBOUR = r"""
O=/tmp/joboutputs
dd if=/dev/zero of=/scratch/mine bs=1M count=50 2>/dev/null || exit 1
while [ ! -e /scratch/go ]; do sleep 0.2; done
dd if=/dev/zero of=/scratch/after bs=1M count=100 2>/dev/null && echo wrote > $O/result
echo "200 neighbour done" > $O/shutdown_message
"""


class ScratchEnv(Env):
    def conf_text(self, mb, image):
        return super().conf_text(mb, image) + "disk_gb_per_processor = 1\n"

    def cleanup(self):
        scratchpool.remove_pool(self.state)
        super().cleanup()


@pytest.fixture
def env(make_config, tmp_path):
    require_root()
    e = ScratchEnv(make_config, tmp_path)
    require_usable(e.backend)
    yield e
    e.cleanup()


def _read(spec, name):
    return (spec.directory.read(f"joboutputs/{name}") or "").strip()


def test_payload_filling_its_scratch_gets_enospc_alone(env):
    neighbour = env.machine(NEIGHBOUR, ordinal=1, processors=2)
    env.backend.create(neighbour)
    filler = env.machine(FILL, ordinal=2)
    env.backend.create(filler)
    area = scratch.mount_point(env.state, os.path.basename(filler.directory.path))
    assert scratch.is_mounted(area)
    status = env.wait(filler, MachineState.SHUTDOWN)
    assert status.state == MachineState.SHUTDOWN and status.exit_code == 0
    assert _read(filler, "limit") == str(GB)
    assert _read(filler, "result") == "enospc", _read(filler, "dd.err")
    used = scratch.used_bytes(env.state, os.path.basename(filler.directory.path))
    assert used is not None and 0.9 * GB < used <= GB
    env.backend.collect(filler.name, filler.directory)
    assert filler.directory.shutdown_message == "300 payload: scratch full (ENOSPC) as expected"
    env.backend.destroy(filler.name, filler.directory)
    assert not scratch.is_mounted(area) and not os.path.exists(area)
    n_area = scratch.mount_point(env.state, os.path.basename(neighbour.directory.path))
    assert env.backend.status(neighbour.name, neighbour.directory).state is \
        MachineState.RUNNING
    open(os.path.join(n_area, "go"), "w").close()
    assert env.wait(neighbour, MachineState.SHUTDOWN).exit_code == 0
    assert _read(neighbour, "result") == "wrote"
    env.backend.collect(neighbour.name, neighbour.directory)
    env.backend.destroy(neighbour.name, neighbour.directory)
    assert not scratch.is_mounted(n_area)


def test_finished_machines_scratch_removed_after_a_restart(env):
    spec = env.machine("echo x > /scratch/x; sleep 600", ordinal=3)
    env.backend.create(spec)
    area = scratch.mount_point(env.state, os.path.basename(spec.directory.path))
    fresh = env.new_backend()                           # a new vacd: nothing in memory
    assert fresh.release_leftovers(env.paths.machines, env.factory) == []
    assert scratch.is_mounted(area)
    env.backend.destroy(spec.name, None)                # no directory: the scratch stays
    assert scratch.is_mounted(area)
    spec.directory.write("finished", "1")
    assert fresh.release_leftovers(env.paths.machines, env.factory) == \
        [os.path.basename(spec.directory.path)]
    assert not scratch.is_mounted(area) and not os.path.exists(area)


def test_tmp_and_var_tmp_are_in_the_bounded_scratch(env):
    spec = env.machine("O=/tmp/joboutputs\n"
                       "dd if=/dev/zero of=/tmp/big bs=1M count=1500 2> $O/tmp.err\n"
                       "grep -q 'No space left on device' $O/tmp.err && echo enospc > $O/tmp\n"
                       "echo v > /var/tmp/v && ls /scratch/.apptainer/var_tmp > $O/var_tmp\n")
    env.backend.create(spec)
    assert env.wait(spec, MachineState.SHUTDOWN).state == MachineState.SHUTDOWN
    assert _read(spec, "tmp") == "enospc", _read(spec, "tmp.err")
    assert _read(spec, "var_tmp") == "v"
    env.backend.collect(spec.name, spec.directory)
    env.backend.destroy(spec.name, spec.directory)
