# SPDX-License-Identifier: BSD-2-Clause
"""The raw side of the libvirt benchmarks: createXML of exactly the XML the backend rendered.

The backend's XML is captured once (recording_xml), then each raw run gives it a fresh machine
directory and UUID whose config drive is built outside the timing, as every new VM has them,
and times conn.createXML() until libvirt reports the domain running.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from typing import Iterator, List

import vac.backends.libvirt.backend as vlibvirt
from vac.backends.libvirt import configdrive
from vac.machine.directory import MachineDir

GUEST = os.environ.get("VAC_TEST_GUEST", "/var/lib/vac-test/guest")
SLEEPER = "#!/bin/sh\nsleep 600\n"
QUICK = '#!/bin/sh\necho "300 Nothing to do" > "$JOBOUTPUTS_DIR/shutdown_message"\n'


@dataclass(frozen=True)
class DomainTemplate:
    """A domain XML the backend rendered, with the machine directory and UUID it names."""

    xml: str
    directory: str
    uuid: str

    def for_machine(self, directory: str, uuid: str) -> str:
        return self.xml.replace(self.directory, directory).replace(self.uuid, uuid)


@contextlib.contextmanager
def recording_xml() -> Iterator[List[str]]:
    """While in use, every domain XML the backend renders is appended to the list yielded."""
    seen: List[str] = []
    original = vlibvirt.render_domain_xml

    def recording(params):
        seen.append(original(params))
        return seen[-1]

    vlibvirt.render_domain_xml = recording
    try:
        yield seen
    finally:
        vlibvirt.render_domain_xml = original


def until_running(conn, name: str) -> None:
    import libvirt

    while conn.lookupByName(name).state()[0] != libvirt.VIR_DOMAIN_RUNNING:
        time.sleep(0.005)


def kill(conn, name: str) -> None:
    """Destroy the domain called name, if there is one."""
    for dom in conn.listAllDomains(0):
        if dom.name() == name:
            try:
                dom.destroy()
            except Exception:  # noqa: BLE001 (gone meanwhile)
                pass


def raw_create(conn, template: DomainTemplate, directory: MachineDir, machine_uuid: str,
               factory: str, name: str) -> float:
    """Seconds from createXML of the template, made this machine's, until the domain runs
    (its config drive is built first, outside the timing; the domain is destroyed after)."""
    configdrive.build_config_drive(directory, factory, directory.file(vlibvirt.CONFIG_DRIVE))
    xml = template.for_machine(directory.path, machine_uuid)
    started = time.perf_counter()
    conn.createXML(xml, 0)
    until_running(conn, name)
    took = time.perf_counter() - started
    kill(conn, name)
    return took
