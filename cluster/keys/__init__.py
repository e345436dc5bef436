"""Keys and trust between nodes: the cluster CA and node certificates, SSH keys, known hosts and SSH connections."""
