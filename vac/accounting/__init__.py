# SPDX-License-Identifier: BSD-2-Clause
"""Accounting and monitoring sent off the factory: APEL job and sync records (archive, the
dirq outgoing queue SSM reads, rejects), VacMon datagrams, the version logger and GOCDB.
"""
