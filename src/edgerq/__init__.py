"""edgerq: reverse tunnels to TCP services, over a pipe the private side dials out."""

__version__ = "0.1.0"

PROTOCOL_VERSION = 1
"""The pipe protocol version this build speaks (see ``protocol/frames.py``)."""
