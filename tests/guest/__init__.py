"""The tiny test guest (kernel + busybox + qemu-ga initramfs, built locally) and its QEMU launcher."""
