"""What both daemons run on: the local-socket relay, metrics and the admin port,
backoff, waiting with deadlines, OS limits and logging."""
