"""The service consumer (public side): service ports, pipe acceptance and its
gate, the registry of pipes per service, and the opening of each client
connection (slots, fairness, the open-attempt state machine, failover)."""
