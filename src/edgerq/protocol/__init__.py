"""The pipe protocol with no I/O: frames in and out, handshakes as state machines."""
