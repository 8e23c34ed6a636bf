# SPDX-License-Identifier: BSD-2-Clause
"""A machinetype's own limits and network, checked (pure): mb_per_processor, docker_ulimits,
docker_pids_limit, docker_network.

docker_ulimits is white-space separated words NAME=SOFT[:HARD], as `docker run --ulimit` takes them
(HARD defaults to SOFT): e.g. "nofile=65536:65536 nproc=4096". NAME must be one the Docker
engine knows (its ulimit table: the setrlimit resources), SOFT and HARD non-negative integers
with SOFT <= HARD, and each NAME given once. vac.config.check reports what is wrong; the Docker
backend turns the checked words into the engine's Ulimits. docker_network is the name of a
network that must exist on the engine when a machine is created (checked there, not here).
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Sequence, Tuple

# The names the Docker engine accepts (github.com/docker/go-units, ulimit.go).
NAMES = ("as", "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice",
         "nofile", "nproc", "rss", "rtprio", "rttime", "sigpending", "stack")
WORD_RE = re.compile(r"^([a-z]+)=([^:]*)(?::(.*))?$")
# Docker's rule for network names (daemon/network: [a-zA-Z0-9][a-zA-Z0-9_.-]*).
NETWORK_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

Ulimit = Tuple[str, int, int]


def _number(text: str, what: str, word: str) -> int:
    if not re.match(r"^[0-9]+$", text):
        raise ValueError(f"{word!r}: the {what} limit {text!r} is not a non-negative integer")
    return int(text)


def parse_word(word: str) -> Ulimit:
    """'nofile=1024:4096' -> ('nofile', 1024, 4096); 'nproc=100' -> ('nproc', 100, 100).

    Raises:
        ValueError: the word is not NAME=SOFT[:HARD] with a known name, integers, SOFT <= HARD.
    """
    found = WORD_RE.match(word)
    if not found:
        raise ValueError(f"{word!r} is not NAME=SOFT[:HARD]")
    name, soft_text, hard_text = found.groups()
    if name not in NAMES:
        raise ValueError(f"{word!r}: unknown ulimit {name!r} (Docker knows: "
                         f"{', '.join(NAMES)})")
    soft = _number(soft_text, "soft", word)
    hard = soft if hard_text is None else _number(hard_text, "hard", word)
    if soft > hard:
        raise ValueError(f"{word!r}: the soft limit {soft} is more than the hard limit {hard}")
    return name, soft, hard


def parse(words: Sequence[str]) -> Tuple[Tuple[Ulimit, ...], List[str]]:
    """(the ulimits that are right, one message per word that is wrong or repeated)."""
    good: Dict[str, Ulimit] = {}
    problems = []
    for word in words:
        try:
            limit = parse_word(word)
        except ValueError as e:
            problems.append(str(e))
            continue
        if limit[0] in good:
            problems.append(f"{word!r}: ulimit {limit[0]} is given more than once")
            continue
        good[limit[0]] = limit
    return tuple(good.values()), problems


def canonical(limits: Sequence[Ulimit]) -> Tuple[str, ...]:
    """The words NAME=SOFT:HARD of parsed limits (what `vac config check` shows)."""
    return tuple(f"{name}={soft}:{hard}" for name, soft, hard in limits)


def engine_ulimits(words: Sequence[str]) -> List[Dict[str, object]]:
    """The engine's HostConfig.Ulimits entries of checked words.

    Raises:
        ValueError: a word is wrong (the configuration check lets none through).
    """
    limits, problems = parse(words)
    if problems:
        raise ValueError("; ".join(problems))
    return [{"Name": name, "Soft": soft, "Hard": hard} for name, soft, hard in limits]


def machinetype_problems(values: Dict[str, Any]) -> List[Tuple[str, str]]:
    """(option, message) for each wrong limit or network option of one machinetype's values;
    docker_ulimits is rewritten to its canonical words NAME=SOFT:HARD."""
    found = []
    if values["mb_per_processor"] <= 0:
        found.append(("mb_per_processor", "must be greater than 0"))
    if values["docker_pids_limit"] < 0:
        found.append(("docker_pids_limit", "must not be negative (0: no limit)"))
    limits, problems = parse(values["docker_ulimits"])
    found += [("docker_ulimits", p) for p in problems]
    values["docker_ulimits"] = canonical(limits)
    network = values["docker_network"]
    if network is not None and not NETWORK_RE.match(network):
        found.append(("docker_network", f"{network!r} is not a Docker network name"))
    return found
