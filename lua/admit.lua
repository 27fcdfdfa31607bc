-- admit.lua: admit requests against every limit that applies to each, all or nothing per request.
--
-- One call carries a batch of requests (a worker sends all the admissions of one event-loop
-- iteration together); they are decided in order, each seeing what the ones before it took.
--
-- KEYS      the keys of request 1's checks, then request 2's, ...:
--             token bucket  <prefix>:{<tag>}:rl:<limiter_id>  hash {tokens, ts}
--             semaphore     <prefix>:{<tag>}:cc:<limiter_id>  sorted set lease_id -> expiry (ms)
-- ARGV[1]   number of requests R
-- ARGV[2]   lease ttl in ms
-- then for each request:
--   lease id, added to every semaphore on admission ("" when the request has no semaphore)
--   kinds, one character per check of the request: "r" bucket, "c" semaphore
--   two values per check: for a bucket rate (tokens per second, may be fractional) and burst
--   (capacity); for a semaphore limit and "" (unused)
--
-- Returns R results, in order: 0 when admitted, otherwise {i, wait_ms} where i is the request's
-- first refusing check (1-based) and wait_ms the time until its bucket holds a token, or -1 for
-- a full semaphore.
--
-- For each request phase one only reads (apart from dropping expired leases, which frees
-- nothing that was still held), phase two writes, so a refusal anywhere spends nothing anywhere.

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

local ttl = tonumber(ARGV[2])
local expiry = math.floor(now + ttl)
local keep = ttl + SLACK_MS

-- One request: its checks are KEYS[k0 + 1 .. k0 + n], its values ARGV[a0 + 1 .. a0 + 2n].
local function admit(k0, a0, n, lease, kinds)

  -- Bucket levels after refill and after this request's claims, so a bucket listed twice
  -- needs two tokens; and the time each level was reckoned at.
  local level = {}
  local stamp = {}

  for i = 1, n do
    local key = KEYS[k0 + i]
    local a = tonumber(ARGV[a0 + 2 * i - 1])
    if string.sub(kinds, i, i) == 'r' then
      local rate = a
      local burst = tonumber(ARGV[a0 + 2 * i])
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

  local done = {}
  for i = 1, n do
    local key = KEYS[k0 + i]
    if not done[key] then
      done[key] = true
      if string.sub(kinds, i, i) == 'r' then
        local rate = tonumber(ARGV[a0 + 2 * i - 1])
        local burst = tonumber(ARGV[a0 + 2 * i])
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
end

local results = {}
local k0 = 0
local a = 3
for r = 1, tonumber(ARGV[1]) do
  local lease = ARGV[a]
  local kinds = ARGV[a + 1]
  local n = #kinds
  results[r] = admit(k0, a + 1, n, lease, kinds)
  k0 = k0 + n
  a = a + 2 + 2 * n
end
return results
