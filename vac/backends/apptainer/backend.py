# SPDX-License-Identifier: BSD-2-Clause
"""ApptainerBackend: `singularity`/`apptainer` machines run as the non-root singularity_user.

vacd runs as root; each machine is `apptainer exec --contain` started by subprocess.Popen with
a preexec step that, still as root, moves the child into the machine's cgroup (join_files)
(`vac/apptainer-<machine name>`, vac.host.cgroupmachine: CPU weight from processors, hard memory
limit mb x processors) and then drops to the user (setgroups, setgid, setuid) before exec. So every
process of the machine is in its cgroup from the first instruction: CPU accounting, the memory
limit and destroy (kill the whole cgroup) cover them all. Apptainer itself runs unprivileged
through user namespaces (as root it fails on these hosts). The argv, the binds and the preexec
step are built by vac.backends.apptainer.launch.

Identity: backend.json records the head pid, its start time (/proc/<pid>/stat field 22), its
uid and the cgroup's inode, so a recycled pid or a re-created cgroup is never mistaken for the
machine, and a restarted vacd adopts running machines without being their parent.

spython is used only to build the `--bind` arguments (generate_bind_list), after every bind
source has been checked here (its sys.exit on a missing source is also caught). It is not used
to run anything: its Client hard-codes `singularity` on PATH (ignoring singularity_path), has
no timeouts, ignores contain=, and cannot place a process in a cgroup or drop privileges; the
version check in probe() uses vac.subp.run with a timeout for the same reasons.
"""
from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
import time
from typing import Dict, Iterable, List, Optional, Tuple

from vac import optional, subp
from vac.backends.apptainer import prepare, strays, vac03
from vac.backends.apptainer.cgroupnames import CGROUP_PREFIX, cgroup_name
from vac.backends.apptainer.launch import (
    bind_specs,
    build_argv,
    child_setup,
    command_of,
    exit_code_of,
    job_id_for,
    join_files,
    spython_bind_args,
)
from vac.backends.apptainer.watch import ProcessWatcher, running_machines
from vac.backends import scratchmount
from vac.backends.base import Backend, Capabilities, MachineSpec, MachineStatus, Probe
from vac.backends.imageversion import url_image_record
from vac.errors import BackendError, BackendUnavailable, FetchError, VacError
from vac.host import cgroups, procs
from vac.host.cgroupmachine import CgroupError, MachineCgroup, list_children, writable
from vac.machine.directory import MachineDir, MachineState, unfinished_machines
from vac.machine.outcome import oom_message
from vac.machine.slots import ordinal_of

log = logging.getLogger(__name__)

MIB = 1024 * 1024
CHILD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
VERSION_TIMEOUT = 10.0
VERSION_CACHE_SECONDS = 600.0
REAP_WAIT_SECONDS = 2.0


# The backend ------------------------------------------------------------------------------

class ApptainerBackend(Backend):
    NAME = "apptainer"
    MODELS = frozenset({"singularity", "apptainer"})
    CAPABILITIES = Capabilities(machinefeatures_url="/tmp/machinefeatures",
                                jobfeatures_url="/tmp/jobfeatures",
                                joboutputs_url="/tmp/joboutputs")

    def __init__(self, settings, proc_root: str = "/proc",
                 hierarchy: Optional[cgroups.Hierarchy] = None,
                 cgroup_fs: Optional[cgroups.CgroupFS] = None,
                 cgroup_parent: str = cgroups.PARENT):
        super().__init__(settings)
        self.proc_root = proc_root
        self.cgroup_parent = cgroup_parent
        self._hierarchy = hierarchy
        self.cgroup_fs = cgroup_fs or cgroups.CgroupFS()
        self._children: Dict[str, subprocess.Popen] = {}
        self._version_cache: Optional[Tuple[tuple, float, str]] = None

    # Host facts ---------------------------------------------------------------------------

    @property
    def hierarchy(self) -> cgroups.Hierarchy:
        if self._hierarchy is None:
            self._hierarchy = cgroups.read_hierarchy(self.proc_root)
        return self._hierarchy

    def binary(self) -> str:
        """singularity_path, else apptainer or singularity on PATH (BackendUnavailable if none
        is an executable file)."""
        configured = self.settings.singularity_path
        if configured:
            if os.path.isfile(configured) and os.access(configured, os.X_OK):
                return configured
            raise BackendUnavailable(self.NAME, f"singularity_path {configured} is not an "
                                     "executable file")
        found = shutil.which("apptainer") or shutil.which("singularity")
        if not found:
            raise BackendUnavailable(self.NAME, "neither apptainer nor singularity is on PATH: "
                                     "install apptainer or set singularity_path")
        return found

    def user(self) -> pwd.struct_passwd:
        """The singularity_user's passwd entry (BackendError if unset, absent or root)."""
        name = self.settings.singularity_user
        if not name:
            raise BackendError(self.NAME, "singularity_user is not set in [settings]")
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise BackendError(self.NAME, f"singularity_user {name!r} does not exist") from None
        if entry.pw_uid == 0:
            raise BackendError(self.NAME, f"singularity_user {name!r} is root; containers "
                               "must run as a non-root user")
        return entry

    def _cgroup(self, machine_name: str) -> MachineCgroup:
        return self._cgroup_named(cgroup_name(machine_name))

    def _cgroup_named(self, name: str) -> MachineCgroup:
        return MachineCgroup(self.hierarchy, name, self.cgroup_parent, self.cgroup_fs)

    # probe --------------------------------------------------------------------------------

    def probe(self) -> Probe:
        try:
            binary = self.binary()
            version = self._version(binary)
            self.user()
            missing = optional.backend_missing(self.NAME)  # create() builds --bind with spython
            if missing is not None:
                return Probe(False, reason=missing.text())
            ok, reason = writable(self.hierarchy)
        except (VacError, OSError, ValueError) as e:
            return Probe(False, reason=str(e))
        if not ok:
            return Probe(False, version=version, reason=f"cgroups: {reason}")
        return Probe(True, version=f"{os.path.basename(binary)} {version}")

    def _version(self, binary: str) -> str:
        """`<binary> version`'s first line. The probe runs every cycle, just before machines
        are created, and the command takes ~20 ms, so a success is reused while the binary
        file is unchanged, for at most VERSION_CACHE_SECONDS; a failure is never reused."""
        st = os.stat(binary)
        key = (binary, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        cached = self._version_cache
        if cached is not None and cached[0] == key and \
                time.monotonic() - cached[1] < VERSION_CACHE_SECONDS:
            return cached[2]
        self._version_cache = None
        done = subp.run([binary, "version"], timeout=min(
            VERSION_TIMEOUT, self.settings.backend_timeout_seconds))
        version = (done.stdout.strip().splitlines() or [""])[0]
        self._version_cache = (key, time.monotonic(), version)
        return version

    # create -------------------------------------------------------------------------------

    def create(self, spec: MachineSpec) -> str:
        user = self.user()
        binary = self.binary()
        directory = spec.directory
        image = self._image(spec)
        command = command_of(spec)
        groups = os.getgrouplist(user.pw_name, user.pw_gid)
        has_user_data = prepare.prepare_directory(self.NAME, spec, user)
        specs = bind_specs(directory.path, bool(spec.machinetype.cvmfs_repositories),
                           has_user_data)
        area = scratchmount.make(spec, self.NAME)   # a bounded /scratch, if asked for
        specs += [f"{area}:{scratchmount.CONTAINER_PATH}:rw"] if area else []
        prepare.check_sources(self.NAME, spec.name, specs, [image], user, groups)
        argv = build_argv(binary, image, directory.path, spec.name, command,
                          spython_bind_args(specs), scratchmount.workdir(area, user))
        cgroup = self._new_cgroup(spec, user)
        proc = self._start(spec, argv, cgroup, user, groups)
        try:
            job_id = self._record(spec, proc, cgroup, user, image)
        except (VacError, OSError) as e:
            self._kill_and_remove(spec.name, cgroup)
            raise BackendError(self.NAME, f"cannot record the new machine: {e}",
                               spec.name) from e
        log.info("%s: started %s as %s (pid %d, cgroup %s)", spec.name, image, user.pw_name,
                 proc.pid, cgroup.relative_path)
        return job_id

    def _image(self, spec: MachineSpec) -> str:
        root = spec.machinetype.root_image
        if not root:
            raise BackendError(self.NAME, f"machinetype {spec.machinetype.name} has no "
                               "root_image", spec.name)
        if root.startswith(("https://", "http://")):
            return self._fetch(spec, root)
        if "://" in root:
            raise BackendError(self.NAME, f"root_image {root}: only https URLs, absolute paths "
                               "and file names under the machinetype's files/ are supported",
                               spec.name)
        path = spec.machinetype.files_path(root)
        if not os.path.exists(path):
            raise BackendError(self.NAME, f"root_image {path} does not exist", spec.name)
        return path

    def _fetch(self, spec: MachineSpec, url: str) -> str:
        from vac import fetch  # lazily: only machinetypes with remote images need pycurl

        paths = self.settings.paths
        cache = paths.image_cache(url)
        try:
            return fetch.fetch_to_cache(url, cache, paths.tmp)
        except FetchError as e:
            if os.path.isfile(cache):
                log.warning("%s: %s; using the cached copy %s", spec.name, e, cache)
                return cache
            raise BackendError(self.NAME, f"cannot fetch root_image: {e}", spec.name) from e

    def _new_cgroup(self, spec: MachineSpec, user: pwd.struct_passwd) -> MachineCgroup:
        cgroup = self._cgroup(spec.name)
        try:
            if cgroup.exists():
                if cgroup.pids():
                    raise BackendError(self.NAME, f"cgroup {cgroup.relative_path} still has "
                                       "processes of an earlier machine", spec.name)
                cgroup.remove()  # a fresh cgroup: CPU and OOM counters start at zero
            cgroup.create(spec.processors, spec.memory_mb * MIB)
            if self.hierarchy.version == 2 and spec.machinetype.cgroup_delegate:
                cgroup.delegate(user.pw_uid, user.pw_gid)   # the payload's own subtree
        except CgroupError as e:
            raise BackendError(self.NAME, str(e), spec.name) from e
        return cgroup

    def _start(self, spec: MachineSpec, argv: List[str], cgroup: MachineCgroup,
               user: pwd.struct_passwd, groups: List[int]) -> subprocess.Popen:
        env = {"PATH": CHILD_PATH, "HOME": user.pw_dir, "USER": user.pw_name,
               "LOGNAME": user.pw_name, "LANG": "C"}
        try:
            console = os.open(spec.directory.file("console.log"),
                              os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW
                              | os.O_CLOEXEC, 0o644)
        except OSError as e:
            self._kill_and_remove(spec.name, cgroup)
            raise BackendError(self.NAME, f"cannot open console.log: {e}", spec.name) from e
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=console,
                                    stderr=subprocess.STDOUT, cwd="/tmp", env=env,
                                    start_new_session=True, close_fds=True,
                                    preexec_fn=child_setup(join_files(cgroup), user.pw_uid,
                                                           user.pw_gid, groups))
        except (OSError, subprocess.SubprocessError) as e:
            self._kill_and_remove(spec.name, cgroup)
            raise BackendError(self.NAME, f"cannot start {argv[0]}: {e}", spec.name) from e
        finally:
            os.close(console)
        self._children[spec.name] = proc
        return proc

    def _record(self, spec: MachineSpec, proc: subprocess.Popen,
                cgroup: MachineCgroup, user: pwd.struct_passwd, image: str) -> str:
        info = procs.read(proc.pid, self.proc_root)
        if info is None:
            raise BackendError(self.NAME, f"pid {proc.pid} vanished at once", spec.name)
        job_id = job_id_for(proc.pid, spec.uuid)
        spec.directory.write_backend_record({
            "backend": self.NAME, "pid": proc.pid, "start_time": info.start_time,
            "uid": user.pw_uid, "user": user.pw_name, "job_id": job_id, "image": image,
            "cgroup": cgroup.relative_path, "cgroup_dirs": cgroup.dirs,
            "cgroup_inode": self._inode(cgroup),
            "memory_limit_bytes": spec.memory_mb * MIB,
            **url_image_record(spec.machinetype.root_image, self.settings.paths)})
        # jobfeatures/job_id stays the factory's UUID (as in 03.00.02): the payload may have
        # read it already. The original's %06d-<uuid> is our backend id, in backend.json.
        return job_id

    # status / collect ---------------------------------------------------------------------

    def status(self, name: str, directory: Optional[MachineDir]) -> MachineStatus:
        if not self._ours(name):
            return MachineStatus(name=name, state=MachineState.SHUTDOWN)
        directory = directory or MachineDir.for_slot(self.settings.paths, name)
        record = self._record_of(directory)
        if record.get("backend") != self.NAME:
            return self._status_without_record(name)
        cgroup = self._machine_cgroup(name, record)
        ours = cgroup.exists() and self._inode(cgroup) == record.get("cgroup_inode")
        running = self._head_alive(record)
        cpu = cgroup.cpu_seconds() if ours else float(record.get("cpu_seconds", 0))
        if running and record.get("adopted"):  # Vac 03 made no cpuacct cgroup on some hosts
            cpu = max(cpu, vac03.tree_cpu_seconds(self._adopted_pids(record)))
        exit_code = self._reap(name, record, ended=not running)
        running = running or self._still_exiting(name, record)
        if exit_code is not None and record.get("exit_code") is None and directory:
            record["exit_code"] = exit_code
            self._save(directory, record)
        return MachineStatus(
            name=name, state=MachineState.RUNNING if running else MachineState.SHUTDOWN,
            cpu_seconds=cpu, backend_id=str(record.get("job_id", "")),
            exit_code=None if running else record.get("exit_code", exit_code),
            oom_killed=(cgroup.oom_kills() > 0) if ours else bool(record.get("oom_killed")),
            extra={"pid": str(record.get("pid", "")), "cgroup": cgroup.relative_path})

    def cgroup_path(self, name: str, directory: Optional[MachineDir]) -> Optional[str]:
        record = directory.read_backend_record() if directory is not None else {}
        if not self._ours(name) or record.get("backend") != self.NAME:
            return None
        try:
            return self._machine_cgroup(name, record).relative_path
        except (KeyError, CgroupError):
            return None

    def _record_of(self, directory: Optional[MachineDir]) -> dict:
        """backend.json; for a machine Vac 03 started (no backend.json), its adoption record,
        written now."""
        record = directory.read_backend_record() if directory is not None else {}
        if record.get("backend") == self.NAME or directory is None or record:
            return record
        found = vac03.recognise(directory, self.user().pw_uid, self.hierarchy,
                                self.cgroup_parent, self.proc_root)
        if found is None:
            return record
        self._save(directory, found)
        log.info("%s: adopted the Vac 03 machine of pid %d (cgroup %s)", directory.name,
                 found["pid"], found["cgroup"] if found["cgroup_inode"] else "none")
        return found

    def _machine_cgroup(self, name: str, record: dict) -> MachineCgroup:
        if record.get("adopted") == vac03.ADOPTED:
            return self._cgroup_named(str(record["cgroup_name"]))
        return self._cgroup(name)

    def _adopted_pids(self, record: dict) -> List[int]:
        """An adopted machine's processes: its cgroup's and its head's process tree."""
        found = set(self._machine_cgroup("", record).pids())
        if self._head_alive(record):
            found.update(vac03.tree(int(record["pid"]), int(record["uid"]), self.proc_root))
        return sorted(found)

    def collect(self, name: str, directory: MachineDir) -> MachineStatus:
        final = self.status(name, directory)
        self._remember(directory, final)
        if final.oom_killed:
            limit = int(directory.read_backend_record().get("memory_limit_bytes", 0)) // MIB
            if directory.write_shutdown_message_if_none(oom_message(limit)):
                log.warning("%s: killed by the OOM killer (memory limit %d MiB)", name, limit)
        return final

    def _status_without_record(self, name: str) -> MachineStatus:
        cgroup = self._cgroup(name)
        busy = bool(cgroup.pids())
        return MachineStatus(name=name,
                             state=MachineState.RUNNING if busy else MachineState.SHUTDOWN,
                             cpu_seconds=cgroup.cpu_seconds(), oom_killed=cgroup.oom_kills() > 0,
                             extra={"cgroup": cgroup.relative_path})

    def _head_alive(self, record: dict) -> bool:
        pid = record.get("pid")
        if not isinstance(pid, int) or pid <= 0:
            return False
        return procs.is_same(pid, record.get("start_time"), record.get("uid"), self.proc_root)

    def _still_exiting(self, name: str, record: dict) -> bool:
        """Our child's head is dead in /proc but not yet reaped (its threads still exiting):
        the machine has not ended yet, and its counts (CPU, OOM kills) may not be final. Once,
        in the cgroup v2 guest under TCG, a head still unreaped after REAP_WAIT_SECONDS was
        reported shut down without its exit code, and without the OOM kill of its payload."""
        proc = self._children.get(name)
        return proc is not None and proc.pid == record.get("pid")

    def _reap(self, name: str, record: dict, ended: bool) -> Optional[int]:
        """The exit code if the head is our child and has ended (reaping it), else None.

        ended: /proc already shows the head dead. A multi-threaded head (apptainer's starter)
        shows as a zombie before wait() can reap it, while its other threads are still exiting
        (a few milliseconds; far longer on a slow guest): then wait for it briefly rather than
        report a machine that has ended without its exit code.
        """
        proc = self._children.get(name)
        if proc is None or proc.pid != record.get("pid"):
            return None
        try:
            returncode = proc.wait(timeout=REAP_WAIT_SECONDS) if ended else proc.poll()
        except subprocess.TimeoutExpired:
            returncode = None
        if returncode is None:
            return None
        del self._children[name]
        return exit_code_of(returncode)

    def _remember(self, directory: MachineDir, final: MachineStatus) -> None:
        """Keep the final CPU seconds, OOM verdict and exit code once the cgroup is gone."""
        record = directory.read_backend_record()
        if record.get("backend") != self.NAME:
            return
        record.update(cpu_seconds=final.cpu_seconds, oom_killed=final.oom_killed)
        if final.exit_code is not None:
            record["exit_code"] = final.exit_code
        self._save(directory, record)

    def _save(self, directory: MachineDir, record: dict) -> None:
        record = {k: v for k, v in record.items() if k != "version"}
        try:
            directory.write_backend_record(record)
        except OSError as e:
            log.warning("%s: cannot update backend.json: %s", directory.name, e)

    def _inode(self, cgroup: MachineCgroup) -> Optional[int]:
        d = cgroup.dir("memory")
        try:
            return os.stat(d).st_ino if d else None
        except OSError:
            return None

    # destroy / list / strays --------------------------------------------------------------

    def destroy(self, name: str, directory: Optional[MachineDir]) -> None:
        if not self._ours(name):
            return
        record = directory.read_backend_record() if directory is not None else {}
        cgroup = self._machine_cgroup(name, record)   # collect() has read its last state
        if record.get("adopted") == vac03.ADOPTED:
            procs.kill_all(self._adopted_pids(record), self.cgroup_fs.kill)
        elif record.get("backend") == self.NAME and self._head_alive(record):
            procs.kill_all([record["pid"]], self.cgroup_fs.kill)
        self._kill_and_remove(name, cgroup)
        scratchmount.remove(self.settings, directory, self.NAME)

    def _kill_and_remove(self, name: str, cgroup: MachineCgroup) -> None:
        try:
            emptied = cgroup.kill()
            proc = self._children.pop(name, None)
            if proc is not None:
                try:
                    proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    log.warning("%s: pid %d did not exit after SIGKILL", name, proc.pid)
            removed = cgroup.remove()
        except CgroupError as e:
            raise BackendError(self.NAME, str(e), name) from e
        if not emptied or not removed:
            raise BackendError(self.NAME, f"cgroup {cgroup.relative_path} still has processes "
                               "after SIGKILL; will retry", name)
        log.info("%s: destroyed (cgroup %s removed)", name, cgroup.relative_path)

    def list_machines(self) -> List[MachineStatus]:
        names = list_children(self.hierarchy, (CGROUP_PREFIX,), self.cgroup_parent,
                              self.cgroup_fs)
        return [self.status(n[len(CGROUP_PREFIX):], None) for n in names
                if self._ours(n[len(CGROUP_PREFIX):])]

    def _ours(self, name: str) -> bool:
        """Only this factory's slot names are ours to list, observe or destroy."""
        return ordinal_of(self.settings.factory_name, name) >= 0

    def live_machine_names(self) -> List[str]:
        """Slots whose record names a singularity/apptainer model and whose directory is
        unfinished: the machines whose cgroups kill_strays must leave alone."""
        return [name for name, record, _ in unfinished_machines(self.settings.paths)
                if record.model in self.MODELS]

    def watch(self, on_end) -> Optional[ProcessWatcher]:
        settings = self.settings
        watcher = ProcessWatcher(lambda: running_machines(settings), on_end)
        watcher.start()
        return watcher

    def parallel_creations(self) -> int:
        return self.settings.apptainer_parallel_creations

    def release_leftovers(self, machines_dir: str, factory_name: str) -> List[str]:
        return scratchmount.release_leftovers(self.settings, factory_name)

    def kill_strays(self, live_names: Optional[Iterable[str]] = None) -> int:
        """The Singularity zombie killer, once per cycle (vac.backends.apptainer.strays).

        live_names: the live machines (default: live_machine_names() from the state dir).
        """
        return strays.kill_strays(self, live_names)
