"""The task framework: long operations as tasks with Proxmox UPIDs, their index, logs, leases and Celery entry points."""
