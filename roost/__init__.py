"""roost: chroot session manager for Linux build hosts."""

__version__ = "0.1.0"
