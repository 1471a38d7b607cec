"""oci2vm: turn a container image into a bootable disk image, as an ordinary user."""

__version__ = "0.1.0"
