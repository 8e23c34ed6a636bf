# SPDX-License-Identifier: BSD-2-Clause
"""A VacQuery responder that answers as the original Vac 03 (VacQuery 01.03, Python 2) did,
for mixed-space tests: run as `python3 vac03_responder.py CONFIG.json` (in the host's network
namespace), it serves a state directory in the original's layout.

What it reproduces of the original's responder, as the original's code does it:
- one UDP socket on port 995 of every address (or the configured one), queries read up to
  1024 bytes; a query is answered when it is JSON with a cookie and this space's name, by its
  legacy `method` or its `message_type`; the cookie is echoed as it came;
- machines: one machine_status per slot (slot names `<short>-NN.<domain>` of the host name),
  from slots/<name> ("created machinetype model"), machines/<created>_<mt>_<name>/ with
  jobfeatures/job_id (uuid), allocated_cpu, max_rss_bytes, machinefeatures/hs06; started,
  finished and heartbeat times are the files' ctimes; the heartbeat's first line is "CPU
  seconds [CPU %]" (an unreadable one counts as 0 and 0); HS06 is 1.0 per processor when the
  machine has none; an empty slot is "Shut down" with 0 / 0 / 0.0;
- machinetypes: one machinetype_status per machinetype; processors are summed as floats
  (allocated_cpu read with float()), so a machinetype with a running machine sends
  "running_processors": 2.0 and "running_cpus": 2.0, and HS06 as floats; a machine is running
  when started, heartbeat younger than an hour and not finished; the last outcome from
  finishes/<machinetype>;
- factory: factory_status with the host's counts and capacity;
- the fields in the order the original's Python 2 dicts put them on the wire; responder-
  heartbeat written on each loop; every datagram sent is logged, one line each.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from typing import Any, Dict, List, Optional

VERSION = "Vac 03.01+pre00 vacd-responder"
VACQUERY = "VacQuery 01.03"
COMMON = ("site", "daemon_version", "vacquery_version")
MACHINETYPE_ORDER = COMMON + (
    "shutdown_machine", "max_wallclock_seconds", "running_processors", "bytes_per_processor",
    "machinetype", "space", "running_hs06", "factory", "vac_version", "shutdown_time",
    "time_sent", "fqan", "cookie", "running_cpus", "num_before_fizzle", "num_machinetypes",
    "running_machines", "max_processors", "shutdown_message", "message_type")
MACHINE_ORDER = COMMON + (
    "machine_model", "created_time", "num_processors", "machinetype", "uuid", "space",
    "num_cpus", "factory", "machine", "state", "vac_version", "time_sent", "hs06",
    "shutdown_time", "num_machines", "heartbeat_time", "fqan", "cookie", "started_time",
    "cpu_seconds", "cpu_percentage", "shutdown_message", "message_type")


def ordered(fields: Dict[str, Any], order) -> str:
    """json.dumps of the fields in the original's wire order (keys it did not send left out)."""
    return json.dumps({k: fields[k] for k in order if k in fields})


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _ctime(path: str) -> Optional[int]:
    try:
        return int(os.stat(path).st_ctime)
    except OSError:
        return None


def slot_name(factory: str, ordinal: int) -> str:
    short, domain = factory.split(".", 1)
    return f"{short}-{ordinal:02d}.{domain}"


class Original:
    """The responder's view of one factory: its config (a JSON object) and state directory."""

    def __init__(self, conf: Dict[str, Any]):
        self.conf = conf
        self.state = conf["state"]
        self.factory = conf["factory"]
        self.space = conf["space"]
        self.slots = int(conf["slots"])
        self.machinetypes: Dict[str, Dict[str, Any]] = conf["machinetypes"]
        self.site = self.space.split(".", 1)[1] if "." in self.space else self.space

    def header(self, kind: str, cookie: str, now: int) -> Dict[str, Any]:
        return {"message_type": kind, "vac_version": VERSION, "daemon_version": VERSION,
                "vacquery_version": VACQUERY, "cookie": cookie, "space": self.space,
                "factory": self.factory, "time_sent": now, "site": self.site}

    def machine_dir(self, created: int, machinetype: str, name: str) -> str:
        return os.path.join(self.state, "machines", f"{created}_{machinetype}_{name}")

    def slot_record(self, name: str):
        try:
            created, machinetype, model = _read(
                os.path.join(self.state, "slots", name)).split()
            return int(created), machinetype, model
        except (AttributeError, ValueError):
            return None

    def machine(self, cookie: str, ordinal: int, now: int) -> str:
        name = slot_name(self.factory, ordinal)
        fields = self.header("machine_status", cookie, now)
        fields.update(num_machines=self.slots, machine=name, state="Shut down",
                      machine_model=None, uuid=None, created_time=None, started_time=None,
                      heartbeat_time=None, num_cpus=0, num_processors=0, cpu_seconds=0,
                      cpu_percentage=0, hs06=0.0, machinetype=None, shutdown_message=None,
                      shutdown_time=None)
        record = self.slot_record(name)
        if record is not None and os.path.isdir(self.machine_dir(*record[:2], name)):
            fields.update(self.machine_fields(name, *record))
        return ordered(fields, MACHINE_ORDER)

    def machine_fields(self, name: str, created: int, machinetype: str,
                       model: str) -> Dict[str, Any]:
        d = self.machine_dir(created, machinetype, name)
        started, finished = _ctime(d + "/started"), _ctime(d + "/finished")
        state = "Starting" if started is None else "Running"
        if finished is not None:
            state = "Shut down"
        uuid = _read(d + "/jobfeatures/job_id")
        processors = _int(_read(d + "/jobfeatures/allocated_cpu"), 0)
        hs06 = _float(_read(d + "/machinefeatures/hs06"))
        cpu_seconds, cpu_percent = _heartbeat(_read(d + "/heartbeat"))
        fields = dict(state=state, machine_model=model, created_time=created,
                      uuid=None if uuid is None else uuid.strip(), started_time=started,
                      heartbeat_time=_ctime(d + "/heartbeat"), num_cpus=processors,
                      num_processors=processors, cpu_seconds=cpu_seconds,
                      cpu_percentage=cpu_percent, machinetype=machinetype,
                      hs06=hs06 if hs06 else 1.0 * processors)
        if state == "Shut down":
            message = _read(d + "/joboutputs/shutdown_message")
            if message is not None:
                fields.update(shutdown_message=message.strip(),
                              shutdown_time=_ctime(d + "/joboutputs/shutdown_message"))
        fqan = _read(d + "/accounting_fqan")
        if fqan is not None:
            fields["fqan"] = fqan.strip()
        return fields

    def machinetype(self, cookie: str, name: str, now: int) -> str:
        hs06, before_fizzle, machines, processors = 0.0, 0, 0, 0
        mt = self.machinetypes[name]
        for ordinal in range(self.slots):
            slot = slot_name(self.factory, ordinal)
            record = self.slot_record(slot)
            if record is None or record[1] != name:
                continue
            d = self.machine_dir(record[0], name, slot)
            if not os.path.isdir(d):
                continue
            started, beat = _ctime(d + "/started"), _ctime(d + "/heartbeat")
            n = _float(_first_line(d + "/jobfeatures/allocated_cpu")) or 1
            mhs06 = _float(_first_line(d + "/jobfeatures/hs06_job")) or 1.0 * n
            if started and beat and beat > int(time.time() - 3600) and \
                    not os.path.exists(d + "/finished"):
                hs06, machines, processors = hs06 + mhs06, machines + 1, processors + n
                before_fizzle += int(time.time()) < started + mt["fizzle_seconds"]
            elif not started and record[0] > int(time.time() - 3600):
                hs06, machines, processors = hs06 + mhs06, machines + 1, processors + 1
                before_fizzle += 1
        fields = self.header("machinetype_status", cookie, now)
        fields.update(num_machinetypes=len(self.machinetypes), machinetype=name,
                      bytes_per_processor=self.conf["mb_per_processor"] * 1048576,
                      running_hs06=hs06, running_machines=machines,
                      running_cpus=processors, running_processors=processors,
                      num_before_fizzle=before_fizzle)
        fields.update(self.last_outcome(name))
        for key in ("accounting_fqan", "max_wallclock_seconds", "max_processors"):
            if key in mt:
                fields["fqan" if key == "accounting_fqan" else key] = mt[key]
        return ordered(fields, MACHINETYPE_ORDER)

    def last_outcome(self, name: str) -> Dict[str, Any]:
        """The outcome of the machinetype's last finished machine (finishes/<machinetype>)."""
        outcome = dict(shutdown_message=None, shutdown_time=None, shutdown_machine=None)
        line = _first_line(os.path.join(self.state, "finishes", name))
        try:
            created, machinetype, machine = line.strip().split()
        except (AttributeError, ValueError):
            return outcome
        outcome["shutdown_machine"] = machine
        path = self.machine_dir(created, machinetype, machine) + \
            "/joboutputs/shutdown_message"
        message = _first_line(path)
        if message is not None and _int(message.strip()[0:3], None) is not None:
            outcome.update(shutdown_message=message.strip(), shutdown_time=_ctime(path))
        return outcome

    def factory_status(self, cookie: str) -> str:
        fields = self.header("factory_status", cookie, int(time.time()))
        running = [json.loads(self.machine(cookie, n, 0)) for n in range(self.slots)]
        running = [m for m in running if m["state"] == "Running"]
        n = self.slots
        fields.update(running_cpus=sum(m["num_processors"] for m in running),
                      running_processors=sum(m["num_processors"] for m in running),
                      running_machines=len(running),
                      running_hs06=float(sum(m["hs06"] for m in running)),
                      max_cpus=n, max_processors=n, max_machines=n, max_hs06=n * 1.0,
                      total_cpus=n, total_machines=n, total_hs06=n * 1.0,
                      load_average=round(os.getloadavg()[2], 2),
                      kernel_version=os.uname()[2], os_issue=os.uname()[2],
                      responder_heartbeat_time=_ctime(self.state + "/responder-heartbeat") or 0,
                      factory_heartbeat_time=0, mjf_heartbeat_time=0,
                      metadata_heartbeat_time=0)
        return json.dumps(fields)

    def answer(self, data: bytes) -> List[str]:
        """The datagrams the original sends back for one query (none for a foreign one)."""
        try:
            query = json.loads(data)
        except ValueError:
            return []
        if not isinstance(query, dict) or "cookie" not in query or \
                query.get("space") != self.space:
            return []
        cookie, kind, method = query["cookie"], query.get("message_type"), query.get("method")
        now = int(time.time())
        if method == "machines" or kind == "machines_query":
            return [self.machine(cookie, n, now) for n in range(self.slots)]
        if method == "machinetypes" or kind == "machinetypes_query":
            return [self.machinetype(cookie, name, now) for name in self.machinetypes]
        if method == "factories" or kind == "factory_query":
            return [self.factory_status(cookie)]
        return []


def _first_line(path: str) -> Optional[str]:
    text = _read(path)
    return None if text is None else (text.splitlines() or [""])[0]


def _int(text: Optional[str], default):
    try:
        return int(text.strip())
    except (AttributeError, ValueError):
        return default


def _float(text: Optional[str]) -> Optional[float]:
    try:
        return float(text.strip())
    except (AttributeError, ValueError):
        return None


def _heartbeat(text: Optional[str]):
    """(CPU seconds, CPU %) as the original read the heartbeat's first line: "0.0 0.0" (the
    first heartbeat of a machine) is not an int, so both are 0."""
    try:
        parts = text.splitlines()[0].split(" ")
        seconds = int(parts[0])
    except (AttributeError, IndexError, ValueError):
        return 0, 0
    try:
        return seconds, float(parts[1])
    except (IndexError, ValueError):
        return seconds, 0


def serve(original: Original, address: str, port: int, log) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, port))
    sock.settimeout(1.0)
    print(f"bound {address}:{port}", file=log, flush=True)
    while True:
        with open(original.state + "/responder-heartbeat", "w") as f:
            f.write(f"{int(time.time())}\n")
        try:
            data, sender = sock.recvfrom(1024)
        except socket.timeout:
            continue
        print(f"received {data!r} from {sender}", file=log, flush=True)
        for reply in original.answer(data):
            sock.sendto(reply.encode("utf-8"), sender)
            print(f"sent {reply}", file=log, flush=True)


def main(argv: List[str]) -> int:
    with open(argv[1]) as f:
        conf = json.load(f)
    with open(conf["log"], "a") as log:
        serve(Original(conf), conf.get("address", ""), int(conf.get("port", 995)), log)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
