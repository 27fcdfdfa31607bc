-- admit.lua: admit one request against every limit that applies to it, all or nothing.
--
-- KEYS[i]   one key per check, in the caller's order:
--             token bucket  <prefix>:{<tag>}:rl:<limiter_id>  hash {tokens, ts}
--             semaphore     <prefix>:{<tag>}:cc:<limiter_id>  sorted set lease_id -> expiry (ms)
-- ARGV[1]   lease id, added to every semaphore on admission ("" when there is no semaphore)
-- ARGV[2]   lease ttl in ms
-- ARGV[3]   kinds, one character per key: "r" bucket, "c" semaphore
-- ARGV[2+2i], ARGV[3+2i]
--           for a bucket:    rate (tokens per second, may be fractional), burst (capacity)
--           for a semaphore: limit, "" (unused)
--
-- Returns 0 when admitted. Otherwise {i, wait_ms}: i is the first refusing check (1-based) and
-- wait_ms the time until its bucket holds a token, or -1 for a full semaphore.
--
-- Phase one only reads (apart from dropping expired leases, which frees nothing that was
-- still held), phase two writes, so a refusal anywhere spends nothing anywhere.

-- Redis before 5 replicated scripts verbatim, which a script reading TIME must not be;
-- from 5 effects replication is the default and from 7 this call is a no-op.
if redis.replicate_commands then
  redis.replicate_commands()
end

-- A bucket that went idle is deleted once it would be full anyway, plus this much slack.
local SLACK_MS = 1000
-- Keeps PEXPIRE's argument a plain integer (about 31 years) for absurdly slow rates.
local MAX_TTL_MS = 1e12

-- The server's clock, never a client's: every worker and replica shares one time line.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000

local lease = ARGV[1]
local ttl = tonumber(ARGV[2])
local kinds = ARGV[3]
local n = #KEYS

-- Bucket levels after refill and after this request's claims, so a bucket listed twice
-- needs two tokens; and the time each level was reckoned at.
local level = {}
local stamp = {}

for i = 1, n do
  local key = KEYS[i]
  local a = tonumber(ARGV[2 + 2 * i])
  if string.sub(kinds, i, i) == 'r' then
    local rate = a
    local burst = tonumber(ARGV[3 + 2 * i])
    local tokens = level[key]
    if tokens == nil then
      local state = redis.call('HMGET', key, 'tokens', 'ts')
      tokens = burst -- a bucket starts full
      stamp[key] = now
      if state[1] then
        local ts = tonumber(state[2])
        -- After a failover to a server whose clock is behind, time stands still for the
        -- bucket until the clock passes ts again: neither drained nor refilled twice.
        if ts > now then
          tokens = tonumber(state[1])
          stamp[key] = ts
        else
          tokens = tonumber(state[1]) + (now - ts) * rate / 1000
        end
      end
    end
    -- Clamping here also applies a reload that lowered the burst.
    if tokens > burst then
      tokens = burst
    end
    if tokens < 1 then
      -- Always >= 1 ms: the bucket lacks a positive amount of token.
      return {i, math.ceil(stamp[key] - now + (1 - tokens) * 1000 / rate)}
    end
    level[key] = tokens - 1
  else
    local limit = a
    if limit < 1 then
      return {i, -1} -- a closed limiter; no need to look at the set
    end
    local held = redis.call('ZCARD', key)
    -- Expired leases are only swept when they are in the way.
    if held >= limit then
      held = held - redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
      if held >= limit then
        return {i, -1}
      end
    end
  end
end

local expiry = math.floor(now + ttl)
local keep = ttl + SLACK_MS
local done = {}
for i = 1, n do
  local key = KEYS[i]
  if not done[key] then
    done[key] = true
    if string.sub(kinds, i, i) == 'r' then
      local rate = tonumber(ARGV[2 + 2 * i])
      local burst = tonumber(ARGV[3 + 2 * i])
      local tokens = level[key]
      redis.call('HSET', key, 'tokens', tokens, 'ts', stamp[key])
      -- Gone once it would be full again (measured from its stamp, which may be ahead of now).
      local idle = math.ceil(stamp[key] - now + (burst - tokens) * 1000 / rate) + SLACK_MS
      if idle > MAX_TTL_MS then
        idle = MAX_TTL_MS
      end
      redis.call('PEXPIRE', key, idle)
    else
      redis.call('ZADD', key, expiry, lease)
      -- Never shorten the key's life below a lease that an older, longer ttl granted.
      if redis.call('PTTL', key) < keep then
        redis.call('PEXPIRE', key, keep)
      end
    end
  end
end
return 0
