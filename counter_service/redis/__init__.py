"""Redis access: URLs, connection factories (TLS included), the Lua scripts, the counter store,
increment batching, and the start probe that tells a configuration error from an outage."""
