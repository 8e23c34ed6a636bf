# SPDX-License-Identifier: BSD-2-Clause
"""The APEL loader's rules for the records we send, checked before a record is queued (pure).

Parsed as APEL's own loader parses: the header line gives the message type, the
rest is split on `%%`, each record is `Key: value` lines split at the first colon. A job record
v0.3 must carry only known fields, every mandatory one, integers and epoch times where the
loader wants them, EndTime >= StartTime and not after now + 2 days, a ServiceLevelType the
loader knows with a ServiceLevel (without them the database load fails), values within the
database's column lengths. Violations raise RecordError with the reason.
"""
from __future__ import annotations

from typing import Dict, List, Mapping

from vac.accounting.apel import JOB_HEADER, SYNC_HEADER

FUTURE_LIMIT = 2 * 86400
SERVICE_LEVEL_TYPES = ("si2k", "hepspec", "hepscore23")
# JobRecord v0.3 fields and the longest value the APEL schema stores for each string field.
JOB_STRINGS = {"Site": 255, "SubmitHost": 255, "MachineName": 255, "Queue": 100,
               "LocalJobId": 255, "LocalUserId": 255, "GlobalUserName": 255, "FQAN": 255,
               "VO": 255, "VOGroup": 255, "VORole": 255, "InfrastructureDescription": 100,
               "InfrastructureType": 20, "ServiceLevelType": 50, "SubmitHostType": 255}
JOB_INTEGERS = ("WallDuration", "CpuDuration", "Processors", "NodeCount", "StartTime",
                "EndTime", "MemoryReal", "MemoryVirtual")
JOB_FLOATS = ("ServiceLevel",)
JOB_IGNORED = ("UpdateTime",)
JOB_MANDATORY = ("Site", "LocalJobId", "WallDuration", "CpuDuration", "StartTime", "EndTime",
                 "ServiceLevelType", "ServiceLevel")
SYNC_STRINGS = {"Site": 255, "SubmitHost": 255}
SYNC_INTEGERS = ("NumberOfJobs", "Month", "Year")
SYNC_MANDATORY = ("Site", "NumberOfJobs", "Month", "Year")
NULLS = ("", "none", "null")


class RecordError(ValueError):
    """A record the APEL loader would reject; the text says why."""


def parse(text: str, header: str) -> List[Dict[str, str]]:
    """The records of a message with this header, as the loader splits them."""
    first, _, body = text.partition("\n")
    if first.strip() != header:
        raise RecordError(f"header {first.strip()[:80]!r} is not {header!r}")
    if not text.endswith("%%\n"):
        raise RecordError("the last record is not closed by %% on its own line")
    records = []
    for chunk in body.split("%%"):
        if not chunk.strip():
            continue
        record: Dict[str, str] = {}
        for line in chunk.strip("\n").split("\n"):
            key, colon, value = line.partition(":")
            if not colon:
                raise RecordError(f"line {line[:80]!r} is not Key: value")
            key = key.strip()
            if key in record:
                raise RecordError(f"field {key} given twice")
            record[key] = value.strip()
        records.append(record)
    return records


def _present(record: Mapping[str, str], key: str) -> bool:
    return record.get(key, "").lower() not in NULLS


def _check_types(record: Mapping[str, str], strings: Mapping[str, int], integers, floats,
                 ignored, mandatory) -> None:
    for key in record:
        if key not in strings and key not in integers and key not in floats \
                and key not in ignored:
            raise RecordError(f"Unknown field: {key}")
    for key in mandatory:
        if not _present(record, key):
            raise RecordError(f"mandatory field {key} missing")
    for key, limit in strings.items():
        if len(record.get(key, "")) > limit:
            raise RecordError(f"{key} is longer than {limit} characters")
    _check_numbers(record, integers, floats)


def _check_numbers(record: Mapping[str, str], integers, floats) -> None:
    for key in integers:
        if _present(record, key):
            value = record[key]
            if not value.isdigit():
                raise RecordError(f"{key} {value[:40]!r} is not a non-negative integer")
    for key in floats:
        if _present(record, key):
            try:
                number = float(record[key])
            except ValueError:
                raise RecordError(f"{key} {record[key][:40]!r} is not a number") from None
            if not number > 0 or number == float("inf"):
                raise RecordError(f"{key} {record[key][:40]!r} is not a positive number")


def check_job(text: str, now: float) -> Dict[str, str]:
    """The one job record of `text` if the loader would accept it, else RecordError."""
    records = parse(text, JOB_HEADER)
    if len(records) != 1:
        raise RecordError(f"{len(records)} records in one message, expected 1")
    record = records[0]
    _check_types(record, JOB_STRINGS, JOB_INTEGERS, JOB_FLOATS, JOB_IGNORED, JOB_MANDATORY)
    start, end = int(record["StartTime"]), int(record["EndTime"])
    if start == 0:
        raise RecordError("StartTime is 0")
    if end < start:
        raise RecordError(f"EndTime {end} is before StartTime {start}")
    if end > now + FUTURE_LIMIT:
        raise RecordError(f"EndTime {end} is more than 2 days in the future")
    if record["ServiceLevelType"].lower() not in SERVICE_LEVEL_TYPES:
        raise RecordError(f"ServiceLevelType {record['ServiceLevelType'][:40]!r} is not one "
                          f"of {', '.join(SERVICE_LEVEL_TYPES)}")
    return record


def check_sync(text: str) -> List[Dict[str, str]]:
    records = parse(text, SYNC_HEADER)
    if not records:
        raise RecordError("no sync record in the message")
    for record in records:
        _check_types(record, SYNC_STRINGS, SYNC_INTEGERS, (), (), SYNC_MANDATORY)
        if not 1 <= int(record["Month"]) <= 12:
            raise RecordError(f"Month {record['Month']} is not 1 to 12")
    return records


def check_values(fields) -> None:
    """Values the framing cannot carry: control characters (a newline would start a field of
    its own) and `%%` (it would end the record)."""
    for key, value in fields:
        if "%%" in value or any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise RecordError(f"{key} contains a control character or %%: {value[:80]!r}")
