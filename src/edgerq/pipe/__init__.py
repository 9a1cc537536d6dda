"""The pipe: one connection between an SP and an SC, without I/O.

Multiplexing, flow control, heartbeats, the memory bounds and the budget, as
plain objects driven by bytes and a clock passed in (``connection``), and the
typed interface the daemons use of a pipe whatever carries it (``interface``).
Nothing here imports asyncio or touches a socket; ``carriers`` does the I/O.
"""
