"""Corosync: corosync.conf rendered from the replicated rows and installed on the host, live status, the QDevice."""
