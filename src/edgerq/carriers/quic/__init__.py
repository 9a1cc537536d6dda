"""The ``udp`` carrier: a pipe over QUIC (qh3). ``carrier`` listens and dials,
``pipe`` adapts a QUIC connection to the pipe core, ``server`` batches
datagrams for many pipes on one socket, ``qh3_compat`` holds all of qh3 that is
not public."""
