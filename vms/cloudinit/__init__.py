"""Cloud-init for VMs: the ``ci*``/``ipconfigN`` options, the NoCloud data built from a VM's config,
and the ISO the VM's cloud-init drive reads (regenerated on the VM's node at every start)."""
