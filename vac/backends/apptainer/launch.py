# SPDX-License-Identifier: BSD-2-Clause
"""How one Apptainer machine is started: its `apptainer exec` argv and binds, the preexec step.

Pure builders for vac.backends.apptainer.backend: the argv (contained, its own hostname and workdir,
MJF environment variables), the SRC:DST[:ro] binds (turned into --bind arguments by spython's
generate_bind_list once every source has been checked), and the step the forked child runs
before exec (join the machine's cgroup as root, then drop to singularity_user); plus the
original's job_id and a shell's view of the exit code.
"""
from __future__ import annotations

import os
import shlex
from typing import List, Optional

from vac import optional
from vac.backends.base import MachineSpec
from vac.errors import BackendError, BackendUnavailable
from vac.host.cgroupmachine import MachineCgroup

# (directory in the machine dir, path inside, bind mode, environment variable)
MJF_BINDS = (("machinefeatures", "/tmp/machinefeatures", "ro", "MACHINEFEATURES"),
             ("jobfeatures", "/tmp/jobfeatures", "ro", "JOBFEATURES"),
             ("joboutputs", "/tmp/joboutputs", "rw", "JOBOUTPUTS"))


def job_id_for(pid: int, uuid: str) -> str:
    """The original's Singularity job_id: %06d-<uuid> with the head pid."""
    return f"{pid:06d}-{uuid}"


def exit_code_of(returncode: int) -> int:
    """Popen's returncode as a shell would show it (killed by signal N -> 128 + N)."""
    return 128 - returncode if returncode < 0 else returncode


def command_of(spec: MachineSpec) -> List[str]:
    """container_command as an argv (split like a shell would, never run by one)."""
    try:
        command = shlex.split(spec.machinetype.container_command or "")
    except ValueError as e:
        raise BackendError("apptainer", f"container_command: {e}", spec.name) from e
    if not command:
        raise BackendError("apptainer", "container_command is empty", spec.name)
    return command


def build_argv(binary: str, image: str, machine_dir: str, hostname: str, command: List[str],
               bind_args: List[str], workdir: Optional[str] = None) -> List[str]:
    """The `apptainer exec` argv of one machine (bind_args from bind_specs via spython); its
    /tmp, /var/tmp and home in workdir (in the machine's bounded scratch when it has one),
    else in the machine directory's mnt/."""
    argv = [binary, "exec", "--contain", "--workdir",
            workdir or os.path.join(machine_dir, "mnt"), "--hostname", hostname]
    argv += bind_args
    for _, inside, _, variable in MJF_BINDS:
        argv += ["--env", f"{variable}={inside}"]
    return argv + [image] + command


def bind_specs(machine_dir: str, cvmfs: bool, user_data: bool) -> List[str]:
    """SRC:DST[:ro] binds: /cvmfs if asked for, MJF ro, joboutputs rw, user_data ro."""
    specs = ["/cvmfs:/cvmfs:ro"] if cvmfs else []
    specs += [f"{os.path.join(machine_dir, sub)}:{inside}:{mode}"
              for sub, inside, mode, _ in MJF_BINDS]
    if user_data:
        specs.append(f"{os.path.join(machine_dir, 'user_data')}:/user_data:ro")
    return specs


def spython_bind_args(specs: List[str]) -> List[str]:
    """['--bind', spec, ...] built by spython; sources must have been checked already."""
    try:
        from spython.main.base.command import generate_bind_list
    except ImportError as e:
        raise BackendUnavailable("apptainer",
                                 optional.for_backend("apptainer", "spython").text()) from e
    try:
        return list(generate_bind_list(None, specs))
    except SystemExit as e:  # spython exits when a bind source is missing
        raise BackendError("apptainer", f"a bind source vanished: {specs}") from e


def join_files(cgroup: MachineCgroup) -> List[str]:
    """The files a new, single-threaded process writes "0" (itself) into to join the cgroup.

    v1: `tasks`, which moves only the writing thread (the whole process, as it has one) and so
    skips the kernel's global threadgroup lock, whose first writer after an idle spell waits
    an RCU grace period (5-15 ms, on the path of every creation). v2 has no such way in
    (a thread cannot leave its domain cgroup): cgroup.procs.
    """
    if cgroup.hierarchy.version == 1:
        return [os.path.join(d, "tasks") for d in cgroup.dirs]
    return cgroup.procs_files


def child_setup(join: List[str], uid: int, gid: int, groups: List[int]):
    """The preexec step: join the machine's cgroup (as root), then become the user.

    join: cgroup.procs or (v1, see join_files) tasks files; the child writes "0" (itself)
    into each. Only os calls run in the forked child (no imports, no locks, no logging).
    """
    def setup() -> None:
        for path in join:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)
        os.umask(0o022)
        os.setgroups(groups)
        os.setgid(gid)
        os.setuid(uid)
    return setup

