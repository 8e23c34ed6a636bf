# SPDX-License-Identifier: BSD-2-Clause
"""The libvirt/KVM backend and everything only VMs use.

backend, domainxml (+ templates/), images, network (NAT bridge), configdrive, metadata (the
service) and services (vacd's supervisor of it).
"""
