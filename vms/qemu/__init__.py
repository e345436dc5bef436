"""The QEMU runtime: config to command line, one daemonized QEMU per VM, QMP, the power operations, the guest agent client."""
