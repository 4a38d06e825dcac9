"""Redis pub/sub: one subscription per process and what rides on it."""
