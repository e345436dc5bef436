"""Node identity: backing up and restoring a node as itself (Proxmox's node re-install procedure)."""
