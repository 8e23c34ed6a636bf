# SPDX-License-Identifier: BSD-2-Clause
"""The payload of the refill tests: marks joboutputs/began, sleeps 2 s, ends with a success
message, so a slot's machines end one after another and each end asks for a refill."""
from __future__ import annotations

PAYLOAD = ("#!/bin/sh\n: > $JOBOUTPUTS/began\nsleep 2\n"
           "echo '200 Success' > $JOBOUTPUTS/shutdown_message\n")
