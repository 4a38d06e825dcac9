"""The server-side Lua scripts: each runs atomically inside Redis in one round trip."""

# KEYS: value key, version key. ARGV: channel, counter name, amount.
# Values are read back with GET so the event carries Redis's exact decimal text:
# Lua numbers are doubles and would print large integers in exponent form.
INCREMENT = """
redis.call('INCRBY', KEYS[1], ARGV[3])
redis.call('INCR', KEYS[2])
local value = redis.call('GET', KEYS[1])
local version = redis.call('GET', KEYS[2])
redis.call('PUBLISH', ARGV[1],
  '{"name":"' .. ARGV[2] .. '","value":' .. value .. ',"version":' .. version .. '}')
return {value, version}
"""

# KEYS: workers set, this worker's key, online value key, online version key.
# ARGV: worker id, live connections (or -1 to leave), key TTL in ms, worker key
# prefix, channel, counter name.
# Sums the live workers (dropping those whose key expired) and publishes the
# total only when it changed, so heartbeats cost no traffic in a steady state.
PRESENCE = """
if tonumber(ARGV[2]) < 0 then
  redis.call('DEL', KEYS[2])
  redis.call('SREM', KEYS[1], ARGV[1])
else
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
  redis.call('SADD', KEYS[1], ARGV[1])
end
local total = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local count = redis.call('GET', ARGV[4] .. id)
  if count then total = total + tonumber(count) else redis.call('SREM', KEYS[1], id) end
end
total = string.format('%d', total)
if redis.call('GET', KEYS[3]) == total then
  return {total, redis.call('GET', KEYS[4]) or '0'}
end
redis.call('SET', KEYS[3], total)
local version = tostring(redis.call('INCR', KEYS[4]))
redis.call('PUBLISH', ARGV[5],
  '{"name":"' .. ARGV[6] .. '","value":' .. total .. ',"version":' .. version .. '}')
return {total, version}
"""
