"""A WAN on one machine: a userspace link emulator and the carrier bench that uses it."""
