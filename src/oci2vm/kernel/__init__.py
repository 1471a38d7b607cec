"""A Debian kernel's modules without running depmod: each module's .modinfo and symbols
read in Python (modinfo), and the files depmod writes into /lib/modules/VERSION computed
from them (depmod), so that the booted system's kmod and udev load modules on demand."""
