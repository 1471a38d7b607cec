"""oci2vm: turn a container image into a bootable disk image, as an ordinary user."""

from oci2vm import native as native  # before any other module: it picks compiled or source

__version__ = "0.1.0"
