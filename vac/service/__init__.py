# SPDX-License-Identifier: BSD-2-Clause
"""vacd as a service: what a service manager and its journal need from the daemon.

systemd's notify protocol and watchdog (sdnotify), log lines with the journal's priorities and
without the same warning every cycle (journal), and the one-line status a person reads in
`systemctl status vacd`, made from the cycle's record (statusline); and the state directory's
lock that keeps one vacd per state directory (lock), which `vac doctor` and `vac slots` also
ask who holds. Otherwise used by vac.daemon alone.
"""
