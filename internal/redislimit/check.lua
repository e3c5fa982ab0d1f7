-- check.lua runs one verification's rate-limit and quota checks for one
-- token atomically; see redislimit.go for the key layout and the rule.
--
-- KEYS[1]  rate hash: field "w" = sub-window width in ns, field "<n>" = count
--          of sub-window n
-- KEYS[2]  quota counter of one period
-- ARGV[1]  rate limit, 0 for none
-- ARGV[2]  sub-window width in ns (decimal)
-- ARGV[3]  current sub-window b = floor(now/width) (decimal)
-- ARGV[4]  buckets: sub-windows b-buckets..b are counted
-- ARGV[5]  rate hash TTL in ms
-- ARGV[6]  quota limit, 0 for none
-- ARGV[7]  quota init: durable count for a missing counter, -1 if unknown
-- ARGV[8]  quota TTL in ms, 0 for none
-- ARGV[9]  "1" to consume when both checks pass
-- ARGV[10] the last moment, in µs since the epoch on Redis's clock, at which
--          this check may consume or seed anything; 0 for no bound
--
-- Returns {flags, rate used, oldest counted sub-window, quota used, Redis's
-- clock in µs}; flags: 1 rate-limited, 2 quota missing, 4 quota exceeded,
-- 8 too late (nothing else was looked at, nothing written).

-- TIME before writes needs effects replication, the only kind from Redis 7
-- on; earlier versions turn it on here.
if redis.replicate_commands then
  redis.replicate_commands()
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local lateAt = tonumber(ARGV[10])
if lateAt > 0 and now > lateAt then
  return {8, 0, 0, 0, now}
end

local rlimit = tonumber(ARGV[1])
local qlimit = tonumber(ARGV[6])
local width = ARGV[2]
local b = tonumber(ARGV[3])

local flags = 0
local used, oldest = 0, 0
local stored

if rlimit > 0 then
  local low = b - tonumber(ARGV[4])
  local flat = redis.call('HGETALL', KEYS[1])
  local subs = {}
  for i = 1, #flat, 2 do
    if flat[i] == 'w' then
      stored = flat[i + 1]
    else
      subs[#subs + 1] = {flat[i], tonumber(flat[i + 1])}
    end
  end

  if stored ~= nil and stored ~= width then
    -- The window changed, so the sub-windows have another width. Move each
    -- old count to the new sub-window holding the old one's end (one later,
    -- against float rounding), but no later than b: an admission is then
    -- never counted as earlier than it was, so no window of the new
    -- length can hold more than the limit, even while nodes with the old
    -- and the new configuration alternate.
    local wo, wn = tonumber(stored), tonumber(width)
    local moved = {}
    for _, s in ipairs(subs) do
      local j = math.floor((tonumber(s[1]) + 1) * wo / wn) + 1
      if j > b then
        j = b
      end
      if j >= low then
        moved[j] = (moved[j] or 0) + s[2]
      end
    end
    redis.call('DEL', KEYS[1])
    local args = {'w', width}
    subs = {}
    for j, c in pairs(moved) do
      local f = string.format('%.0f', j)
      args[#args + 1] = f
      args[#args + 1] = c
      subs[#subs + 1] = {f, c}
    end
    redis.call('HSET', KEYS[1], unpack(args))
    redis.call('PEXPIRE', KEYS[1], ARGV[5])
    stored = width
  end

  -- Sub-windows after b (written by a node whose clock is ahead) are
  -- counted too: counting more is safe, counting less is not.
  local stale = {}
  for _, s in ipairs(subs) do
    local n = tonumber(s[1])
    if n < low then
      stale[#stale + 1] = s[1]
    else
      if used == 0 or n < oldest then
        oldest = n
      end
      used = used + s[2]
    end
  end
  if #stale > 0 then
    redis.call('HDEL', KEYS[1], unpack(stale))
  end
  if used >= rlimit then
    flags = 1
  end
end

local qused = 0
if qlimit > 0 then
  local v = redis.call('GET', KEYS[2])
  if v then
    qused = tonumber(v)
  else
    local init = tonumber(ARGV[7])
    if flags == 1 then
      -- Rate-limited: the quota is not checked, so neither seeded nor
      -- reported missing.
      qused = math.max(init, 0)
    elseif init < 0 then
      return {2, used, oldest, 0, now}
    else
      if tonumber(ARGV[8]) > 0 then
        redis.call('SET', KEYS[2], ARGV[7], 'PX', ARGV[8])
      else
        redis.call('SET', KEYS[2], ARGV[7])
      end
      qused = init
    end
  end
  if flags == 0 and qused >= qlimit then
    flags = 4
  end
end

if flags == 0 and ARGV[9] == '1' then
  if rlimit > 0 then
    redis.call('HINCRBY', KEYS[1], ARGV[3], 1)
    if stored == nil then
      redis.call('HSET', KEYS[1], 'w', width)
    end
    redis.call('PEXPIRE', KEYS[1], ARGV[5])
    if used == 0 or b < oldest then
      oldest = b
    end
    used = used + 1
  end
  if qlimit > 0 then
    qused = redis.call('INCR', KEYS[2])
  end
end

return {flags, used, oldest, qused, now}
