"""edgerq: reverse tunnels to TCP services, over a pipe the private side dials out."""

__version__ = "0.1.0"
