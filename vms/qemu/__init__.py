"""QEMU: the guest agent client (and the VM runtime beside it)."""
