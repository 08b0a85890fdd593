"""The Lua the boards run in Valkey/Redis: each script is one round trip and touches each sorted set with
O(log N) operations. Totals are kept exactly (mg and tick) in a hash beside each sorted set; the sorted set
holds only residents who appear publicly, so a resident who opted out is absent yet can still be told where
they would stand (ZCOUNT above their score)."""

from __future__ import annotations

__all__ = ["APPLY", "READ", "REMOVE"]

_COMMON = """
local TB = 8388608
local TMAX = TB - 1
local GMAX = 536870911
local function score(mg, tick)
  local g = math.floor(mg / 1000)
  if g > GMAX then g = GMAX elseif g < -GMAX then g = -GMAX end
  return string.format('%d', g * TB + (TMAX - tick))
end
local function parse(v)
  if not v then return 0, 0 end
  local c = string.find(v, ':')
  return tonumber(string.sub(v, 1, c - 1)), tonumber(string.sub(v, c + 1))
end
local function bump(hkey, member, d, tick)
  local mg, t = parse(redis.call('HGET', hkey, member))
  mg = mg + d
  if tick > t then t = tick end
  redis.call('HSET', hkey, member, string.format('%d:%d', mg, t))
  return mg, t
end
-- Every write moves the boards' generation on, so a reader's cached top N stays exact: readers compare it in
-- READ. It starts from the server's clock in µs, so it never comes back to a value a reader holds after a wipe.
local function moved(k)
  local t = redis.call('TIME')
  redis.call('SET', k, string.format('%d%06d', t[1], t[2]), 'NX')
  redis.call('INCR', k)
end
local function expire(exp, ...)
  if exp > 0 then for _, k in ipairs({...}) do redis.call('EXPIREAT', k, exp) end end
end
local function regroup(z, h, s, group, d, tick, holder, joining)
  local mg, t = bump(h, group, d, tick)
  if joining then redis.call('SADD', s, holder) end
  local n = redis.call('SCARD', s)
  if n > 0 then redis.call('ZADD', z, score(math.floor(mg / n), t), group) else redis.call('ZREM', z, group) end
end
"""

# Amounts for one resident (a book entry on all its periods, or a reseat's totals): KEYS = (zset, hash) per
# resident board, (zset, hash, active set) per group board, the seat hash, the generation. ARGV = holder,
# #resident boards, #group boards, visible, packed seat, then (mg, tick, expire-at) per resident board and
# (group, mg, tick, expire-at) per group board.
APPLY = _COMMON + """
local holder = ARGV[1]
local nh, ng, visible = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] == '1'
local a = 6
for i = 0, nh - 1 do
  local z, h = KEYS[2 * i + 1], KEYS[2 * i + 2]
  local delta, tick, exp = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  local mg, t = bump(h, holder, delta, tick)
  if visible then redis.call('ZADD', z, score(mg, t), holder) else redis.call('ZREM', z, holder) end
  expire(exp, z, h)
end
local k = 2 * nh
for j = 0, ng - 1 do
  local z, h, s = KEYS[k + 3 * j + 1], KEYS[k + 3 * j + 2], KEYS[k + 3 * j + 3]
  local group, delta, tick, exp = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  a = a + 4
  regroup(z, h, s, group, delta, tick, holder, true)
  expire(exp, z, h, s)
end
redis.call('HSET', KEYS[k + 3 * ng + 1], holder, ARGV[5])
moved(KEYS[k + 3 * ng + 2])
return 1
"""

# Taking one resident off boards (a reseat, before their totals are added to their new boards): KEYS = (zset,
# hash) pairs, the global board's first, then (zset, hash, active set) triples, the generation; ARGV = holder,
# #pairs, #triples, the triples' groups. They leave each group's active residents, and the group is recomputed.
REMOVE = _COMMON + """
local holder, np, nt = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 0, np - 1 do
  redis.call('HDEL', KEYS[2 * i + 2], holder)
  redis.call('ZREM', KEYS[2 * i + 1], holder)
end
local base = 2 * np
for j = 0, nt - 1 do
  local z, h, s = KEYS[base + 3 * j + 1], KEYS[base + 3 * j + 2], KEYS[base + 3 * j + 3]
  local group = ARGV[4 + j]
  if redis.call('SREM', s, holder) == 1 then
    -- The group's sum and latest time, recomputed from the members left (their totals for this period are in
    -- the global board's hash, KEYS[2]); a group nobody is left in leaves the board.
    local members = redis.call('SMEMBERS', s)
    if #members == 0 then
      redis.call('HDEL', h, group)
      redis.call('ZREM', z, group)
    else
      local sum, latest = 0, 0
      for _, m in ipairs(members) do
        local m_mg, m_t = parse(redis.call('HGET', KEYS[2], m))
        sum = sum + m_mg
        if m_t > latest then latest = m_t end
      end
      redis.call('HSET', h, group, string.format('%d:%d', sum, latest))
      redis.call('ZADD', z, score(math.floor(sum / #members), latest), group)
    end
  end
end
moved(KEYS[base + 3 * nt + 1])
return 1
"""

# Top N, my standing and my neighbours in one round trip. KEYS = zset, hash, generation; ARGV = holder ('' for
# none), limit, how many neighbours on each side, the generation the caller's top N is from ('' for none).
# Returns {top (member, score, exact) or false when the caller's is still current, count, me exact or false,
# my rank or false, neighbours (member, score, exact), the generation or false}.
READ = _COMMON + """
local z, h = KEYS[1], KEYS[2]
local holder, limit, around = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local gen = redis.call('GET', KEYS[3]) or false
local function rows(flat)
  local out = {}
  if #flat == 0 then return out end
  local members = {}
  for i = 1, #flat, 2 do members[#members + 1] = flat[i] end
  local exact = redis.call('HMGET', h, unpack(members))
  for i = 1, #flat, 2 do
    out[#out + 1] = {flat[i], flat[i + 1], exact[(i + 1) / 2] or false}
  end
  return out
end
local top = false
if not gen or gen ~= ARGV[4] then top = rows(redis.call('ZREVRANGE', z, 0, limit - 1, 'WITHSCORES')) end
local count = redis.call('ZCARD', z)
local me, rank, near = false, false, {}
if holder ~= '' then
  me = redis.call('HGET', h, holder) or false
  local r = redis.call('ZREVRANK', z, holder)
  if r then
    rank = r + 1
    near = rows(redis.call('ZREVRANGE', z, math.max(0, r - around), r + around, 'WITHSCORES'))
  elseif me then
    local mg, t = parse(me)
    local above = redis.call('ZCOUNT', z, '(' .. score(mg, t), '+inf')
    rank = above + 1
    near = rows(redis.call('ZREVRANGE', z, math.max(0, above - around), above + around - 1, 'WITHSCORES'))
  end
end
return {top, count, me, rank, near, gen}
"""
