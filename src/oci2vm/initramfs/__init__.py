"""oci2vm's own initramfs: a cpio "newc" writer, the boot spec the init reads, the init
script itself (init.sh, run by a static busybox as PID 1), and the builder that puts a
busybox, the kernel modules that reach root and the first NIC, and the spec together."""
