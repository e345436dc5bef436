"""A real multi-node corosync cluster on one Linux host, in network namespaces (no Django here)."""
