# SPDX-License-Identifier: BSD-2-Clause
"""A machine's directory and what goes in and out of it: MJF, user_data, proxy, joboutputs.

Also the slots (numbering, names, addresses) the directories belong to.
"""
