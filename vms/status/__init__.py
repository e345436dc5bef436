"""Live status (Proxmox's pvestatd): this node, its running VMs and storages, their history and API."""
