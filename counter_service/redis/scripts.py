"""The server-side Lua scripts: each runs atomically inside Redis in one round trip.

Every script checks the keys it will change before it writes anything: Redis does not
roll a script back, so a check after the first write would leave half a change.
Values and versions are read back with GET: Lua numbers are doubles and would print
large integers in exponent form.

Every command goes through `call`, which fails like `redis.call` but appends the command's
name to what Redis said: Redis 7.0 reports a command an ACL forbids inside a script
without naming it, and an operator needs the name to fix the rule.
"""

# problem(key, is_value): why `key` is not a counter key, or nil if it is one (or absent).
# A value is a signed 64-bit decimal; a version is a positive decimal of at most 18
# digits, so INCR can never overflow it. Lua numbers are doubles, so the 64-bit bound
# is checked on the digits: equal-length digit strings compare like the numbers.
_CHECKS = """
local function call(...)
  local reply = redis.pcall(...)
  if type(reply) == 'table' and reply['err'] then
    local command = ...
    error({err = reply['err'] .. ' (' .. string.upper(command) .. ')'})
  end
  return reply
end
local function in_int64(text)
  local negative = string.sub(text, 1, 1) == '-'
  local digits = negative and string.sub(text, 2) or text
  if #digits ~= 19 then return #digits < 19 end
  return digits <= (negative and '9223372036854775808' or '9223372036854775807')
end
local function problem(key, is_value)
  local kind = call('TYPE', key)['ok']
  if kind == 'none' then return nil end
  if kind ~= 'string' then return 'holds a ' .. kind .. ', not a counter' end
  local text = call('GET', key)
  local digits = is_value and '^%-?[1-9]%d*$' or '^[1-9]%d*$'
  local longest = is_value and 20 or 18
  if text ~= '0' and (#text > longest or not string.match(text, digits)) then
    return 'holds ' .. string.format('%q', string.sub(text, 1, 40)) .. ', not an integer'
  end
  if is_value and not in_int64(text) then return 'holds a value outside a 64-bit integer' end
  return nil
end
local function corrupt(key, why)
  return redis.error_reply('CORRUPT ' .. key .. ' ' .. why)
end
local function now_ms()
  local now = call('TIME')
  return now[1] .. string.format('%03d', math.floor(tonumber(now[2]) / 1000))
end
local function event(name, value, version)
  return '{"name":"' .. name .. '","value":' .. value .. ',"version":' .. version
    .. ',"ts":' .. now_ms() .. '}'
end
"""

# KEYS: value key, version key. ARGV: channel, counter name, amount, PUBLISH or SPUBLISH
# (on a cluster the channel is in the keys' slot, so the script stays on one shard).
INCREMENT = (
    _CHECKS
    + """
for i = 1, 2 do
  local why = problem(KEYS[i], i == 1)
  if why then return corrupt(KEYS[i], why) end
end
-- The checks passed, so INCRBY can only overflow; any other error (a missing ACL
-- permission, OOM, a read-only replica) is Redis's and goes back as it is.
local added = redis.pcall('INCRBY', KEYS[1], ARGV[3])
if type(added) == 'table' and added['err'] then
  if string.find(added['err'], 'overflow') then
    return redis.error_reply('OVERFLOW ' .. KEYS[1] .. ' ' .. added['err'])
  end
  if string.find(added['err'], 'not an integer') then
    return corrupt(KEYS[1], 'holds a value outside a 64-bit integer')
  end
  return redis.error_reply(added['err'] .. ' (INCRBY)')
end
call('INCR', KEYS[2])
local value = call('GET', KEYS[1])
local version = call('GET', KEYS[2])
call(ARGV[4], ARGV[1], event(ARGV[2], value, version))
return {value, version}
"""
)

# KEYS: value key, version key. Returns {value, version} (nil for absent keys).
READ = (
    _CHECKS
    + """
for i = 1, 2 do
  local why = problem(KEYS[i], i == 1)
  if why then return corrupt(KEYS[i], why) end
end
return {call('GET', KEYS[1]), call('GET', KEYS[2])}
"""
)

# KEYS: the presence hash, online value key, online version key (one slot: `{online}`).
# ARGV: worker id, live connections (or -1 to leave), TTL in ms, channel, counter name,
# PUBLISH or SPUBLISH.
# Each worker's field holds "count:deadline_ms"; a field past its deadline (its worker
# died) is dropped, and the total is published only when it changed, so heartbeats cost
# no traffic in a steady state. Every key is declared (a cluster needs that). The
# service owns these keys: a corrupt one is reset rather than refused.
PRESENCE = (
    _CHECKS
    + """
local now = call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local kind = call('TYPE', KEYS[1])['ok']
if kind ~= 'hash' and kind ~= 'none' then call('DEL', KEYS[1]) end
if problem(KEYS[2], true) then call('DEL', KEYS[2]) end
if problem(KEYS[3], false) then call('DEL', KEYS[3]) end
if tonumber(ARGV[2]) < 0 then
  call('HDEL', KEYS[1], ARGV[1])
else
  call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. string.format('%d', now_ms + ARGV[3]))
end
local total = 0
local fields = call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local count, deadline = string.match(fields[i + 1], '^(%d+):(%d+)$')
  if count and tonumber(deadline) > now_ms then
    total = total + tonumber(count)
  else
    call('HDEL', KEYS[1], fields[i])
  end
end
total = string.format('%d', total)
if call('GET', KEYS[2]) == total then
  return {total, call('GET', KEYS[3]) or '0'}
end
call('SET', KEYS[2], total)
call('INCR', KEYS[3])
local version = call('GET', KEYS[3])
call(ARGV[6], ARGV[4], event(ARGV[5], total, version))
return {total, version}
"""
)
