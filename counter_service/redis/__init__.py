"""Redis access: connection factories, the Lua scripts, the counter store and increment batching."""
