"""Boot stage: the bootloader (grub.py), the initramfs and the kernel the image boots."""
