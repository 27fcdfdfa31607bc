-- release.lua: give back permits and settle token reservations, for one request or for many.
--
-- KEYS[1..P]      a semaphore (<prefix>:{<tag>}:cc:<limiter_id>) that a lease was admitted into
-- ARGV[1..P]      the lease id to remove from the semaphore at the same position
-- KEYS[P+1..P+S]  a token bucket (<prefix>:{<tag>}:tk:<limiter_id>) a request reserved from
-- ARGV[P+1..]     three values per token bucket: rate (tokens per second), burst, and the
--                 difference to settle: reserved minus used (positive gives tokens back,
--                 negative charges what the request used beyond its reservation)
--
-- S is (#ARGV - #KEYS) / 2, so a call without settlements is just the pairs.
--
-- A worker sends the releases and settlements of one event-loop iteration together: the entries
-- need not belong to one request. Returns how many pairs still held their lease. A lease that was
-- no longer there had expired and been swept already; that is harmless, its permit came back then.
--
-- A settlement refills the bucket to now first (as admit.lua does), then adds the difference and
-- clamps to the burst: a refund never lifts a bucket above full, a charge may take it below zero.
-- A bucket that is missing is full (it expired idle), so a refund to it changes nothing.

if redis.replicate_commands then
  redis.replicate_commands()
end

local SLACK_MS = 1000
local MAX_TTL_MS = 1e12

local pairs_n = #KEYS - (#ARGV - #KEYS) / 2
local released = 0
-- One ZREM per pair: gathering the pairs by key first costs Redis's Lua more in tables than the
-- commands it would save for the small batches a worker sends.
for i = 1, pairs_n do
  released = released + redis.call('ZREM', KEYS[i], ARGV[i])
end

if #KEYS > pairs_n then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
  -- Each bucket is read once, settled in order (clamped at each step, as separate calls would
  -- be) and written once; last[key] is the ARGV index of its last entry's rate (burst follows),
  -- exp[key] when the key expires (its 'exp' field, 0 without one).
  local level, stamp, last, exp = {}, {}, {}, {}
  local a = pairs_n + 1
  for i = pairs_n + 1, #KEYS do
    local key = KEYS[i]
    local rate = tonumber(ARGV[a])
    local burst = tonumber(ARGV[a + 1])
    local delta = tonumber(ARGV[a + 2])
    local tokens = level[key]
    if tokens == nil then
      local state = redis.call('HMGET', key, 'tokens', 'ts', 'exp')
      tokens = burst
      stamp[key] = now
      exp[key] = tonumber(state[3]) or 0
      if state[1] then
        local ts = tonumber(state[2])
        if ts > now then
          tokens = tonumber(state[1])
          stamp[key] = ts
        else
          tokens = tonumber(state[1]) + (now - ts) * rate / 1000
        end
      end
    end
    if tokens > burst then
      tokens = burst
    end
    level[key], last[key] = tokens + delta, a
    a = a + 3
  end
  for key, tokens in pairs(level) do
    local rate = tonumber(ARGV[last[key]])
    local burst = tonumber(ARGV[last[key] + 1])
    if tokens >= burst then
      -- Full: the same as absent.
      redis.call('DEL', key)
    else
      -- As in admit.lua: PEXPIRE only when the key's expiry ('exp') comes too soon, then with a
      -- second of slack; a key that lives longer than needed is only a full bucket kept a while.
      local idle = math.ceil(stamp[key] - now + (burst - tokens) * 1000 / rate) + SLACK_MS
      if now + idle <= exp[key] then
        redis.call('HSET', key, 'tokens', tokens, 'ts', stamp[key])
      else
        idle = idle + SLACK_MS
        if idle > MAX_TTL_MS then
          idle = MAX_TTL_MS
        end
        redis.call('HSET', key, 'tokens', tokens, 'ts', stamp[key], 'exp', math.floor(now + idle))
        redis.call('PEXPIRE', key, idle)
      end
    end
  end
end
return released
