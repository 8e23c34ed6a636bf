# SPDX-License-Identifier: BSD-2-Clause
"""APEL records as text (pure): the individual job record v0.3 and the sync record v0.1.

The field order and values are the original Vac's (job record v0.3 as APEL parses it); a record is
`Key: value` lines after the header, closed by `%%` on its own line.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import List, Optional, Tuple

JOB_HEADER = "APEL-individual-job-message: v0.3"
SYNC_HEADER = "APEL-sync-message: v0.1"
KIB = 1024

Fields = List[Tuple[str, str]]


@dataclass(frozen=True)
class JobFacts:
    """What a finished machine's directory says about its run."""

    uuid: str
    machinetype: str
    started: int
    ended: int              # the last heartbeat
    cpu_seconds: int
    processors: int
    hs06: Optional[float]   # the whole machine's HS06 (machinefeatures/hs06)
    max_rss_bytes: Optional[int]
    fqan: Optional[str]


def global_user_name(space: str) -> str:
    """The space as a DN, labels reversed: vac01.example.com -> /DC=com/DC=example/DC=vac01."""
    return "".join(f"/DC={label}" for label in reversed(space.split(".")))


def submit_host(space: str, factory: str) -> str:
    return f"{space}/vac-{factory}"


def service_level(facts: JobFacts) -> float:
    """HS06 per processor, 1.0 when the machine had no HS06 value."""
    if facts.hs06 is None or facts.processors < 1:
        return 1.0
    return facts.hs06 / facts.processors


def job_fields(site: str, space: str, factory: str, facts: JobFacts) -> Fields:
    fields: Fields = [
        ("Site", site),
        ("SubmitHost", submit_host(space, factory)),
        ("LocalJobId", facts.uuid),
        ("LocalUserId", factory),
        ("Queue", facts.machinetype),
        ("GlobalUserName", global_user_name(space)),
    ]
    if facts.fqan:
        fields.append(("FQAN", facts.fqan))
    memory = str(facts.max_rss_bytes // KIB) if facts.max_rss_bytes is not None else None
    fields += [
        ("WallDuration", str(facts.ended - facts.started)),
        ("CpuDuration", str(facts.cpu_seconds)),
        ("Processors", str(facts.processors)),
        ("NodeCount", "1"),
        ("InfrastructureDescription", "APEL-VAC"),
        ("InfrastructureType", "grid"),
        ("StartTime", str(facts.started)),
        ("EndTime", str(facts.ended)),
    ]
    if memory is not None:
        fields += [("MemoryReal", memory), ("MemoryVirtual", memory)]
    fields += [("ServiceLevelType", "HEPSPEC"), ("ServiceLevel", f"{service_level(facts):.3f}")]
    return fields


def render(header: str, fields: Fields) -> str:
    """The message text: header, one `Key: value` line per field, `%%` after the record."""
    return header + "\n" + "".join(f"{k}: {v}\n" for k, v in fields) + "%%\n"


def job_record(site: str, space: str, factory: str, facts: JobFacts) -> str:
    return render(JOB_HEADER, job_fields(site, space, factory, facts))


def sync_record(site: str, submit: str, jobs: int, year: int, month: int) -> str:
    return render(SYNC_HEADER, [("Site", site), ("SubmitHost", submit),
                                ("NumberOfJobs", str(jobs)), ("Month", str(month)),
                                ("Year", str(year))])


def field_value(text: str, key: str) -> Optional[str]:
    """The value of the first `key:` line of a record, stripped; None if there is none."""
    prefix = key + ":"
    for line in text.splitlines():
        if line.startswith(prefix):
            return line[len(prefix):].strip()
    return None


def utc_day(when: float) -> str:
    return time.strftime("%Y%m%d", time.gmtime(when))
