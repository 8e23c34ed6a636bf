# SPDX-License-Identifier: BSD-2-Clause
"""The space: VacQuery 01.03 messages, the responder in vacd, the client behind `vac machines`,
`vac machinetype` and `vac factories`, and the space-wide census the planner decides from.
"""
