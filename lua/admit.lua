-- admit.lua: admit requests against every limit that applies to each, all or nothing per request.
--
-- One call carries a batch of requests (a worker sends all the admissions of one event-loop
-- iteration together); they are decided in order, each seeing what the ones before it took.
--
-- KEYS      the keys of request 1's checks, then request 2's, ...:
--             request bucket  <prefix>:{<tag>}:rl:<limiter_id>  hash {tokens, ts, exp}
--             token bucket    <prefix>:{<tag>}:tk:<limiter_id>  hash {tokens, ts, exp}
--             semaphore       <prefix>:{<tag>}:cc:<limiter_id>  sorted set lease_id -> expiry (ms)
-- ARGV[1]   number of requests R
-- ARGV[2]   lease ttl in ms
-- then for each request:
--   lease id, added to every semaphore on admission ("" when the request has no semaphore)
--   cost: the model tokens the request reserves from each of its token buckets (an integer >= 0)
--   kinds, one character per check of the request: "r" request bucket, "t" token bucket,
--   "c" semaphore
--   two values per check: for a bucket rate (per second, may be fractional) and burst
--   (capacity); for a semaphore limit and "" (unused)
--
-- Returns R results, in order:
--   refused   {i, wait_ms}: i is the request's first refusing check (1-based); wait_ms the time
--             until its bucket could admit the request, -1 for a full semaphore, -2 for a token
--             bucket whose whole burst is smaller than the cost (waiting cannot help)
--   admitted  0 when the request has no bucket; otherwise
--             {0, ri, r_remaining, r_reset_ms, ti, t_remaining, t_reset_ms}: ri is the request
--             bucket with the fewest whole units left after this request (0 when there is none),
--             r_remaining those units and r_reset_ms the time until it is full again; ti and the
--             rest the same for token buckets. This feeds the x-ratelimit-* response headers.
--
-- A request bucket takes 1 unit, a token bucket takes the cost. A token bucket may hold less
-- than zero after release.lua settled a request that used more than it reserved; it then admits
-- nothing until the refill has paid the debt.
--
-- For each request phase one only reads (apart from dropping expired leases, which frees
-- nothing that was still held), phase two commits into a cache the whole call shares, so a
-- refusal anywhere spends nothing anywhere. The cache is written to Redis once at the end: each
-- key is read at most once and written once per call, however many requests of the batch use it.

-- Redis before 5 replicated scripts verbatim, which a script reading TIME must not be;
-- from 5 effects replication is the default and from 7 this call is a no-op.
if redis.replicate_commands then
  redis.replicate_commands()
end

-- A bucket that went idle is deleted once it would be full anyway, plus this much slack.
local SLACK_MS = 1000
-- Keeps PEXPIRE's argument a plain integer (about 31 years) for absurdly slow rates.
local MAX_TTL_MS = 1e12
-- Score/member values per ZADD (an even number).
local ZADD_SLICE = 1000

-- The server's clock, never a client's: every worker and replica shares one time line.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000

local ttl = tonumber(ARGV[2])
local expiry = math.floor(now + ttl)
local keep = ttl + SLACK_MS

-- What the batch has seen and taken so far, shared by all its requests: a key is read from
-- Redis once per call and written once at the end, however many requests of the batch use it.
-- (As few tables as will do: each one costs Redis's Lua measurably on every call.)
--   level[key], stamp[key]   a bucket's level after refill and every admitted claim, and the
--                            time it was reckoned at
--   last[key]                the ARGV index of the rate of its last admitted check (the burst
--                            follows it), to compute its expiry at the end
--   exp[key]                 when the key expires (its 'exp' field, 0 when it has none)
--   held[key]                a semaphore's leases, swept or not, plus those this batch added
--   added[key]               the lease this batch adds to a semaphore, or a list of them
local level, stamp, last, exp = {}, {}, {}, {}
local held, added = {}, {}

-- A bucket's level now, from the batch's cache or from Redis; nil when it is absent (full).
local function bucket(key, rate)
  local tokens = level[key]
  if tokens ~= nil then
    return tokens
  end
  local state = redis.call('HMGET', key, 'tokens', 'ts', 'exp')
  stamp[key] = now
  exp[key] = tonumber(state[3]) or 0
  if state[1] then
    local ts = tonumber(state[2])
    -- After a failover to a server whose clock is behind, time stands still for the
    -- bucket until the clock passes ts again: neither drained nor refilled twice.
    if ts > now then
      stamp[key] = ts
      return tonumber(state[1])
    end
    return tonumber(state[1]) + (now - ts) * rate / 1000
  end
  return nil
end

-- One request: its checks are KEYS[k0 + 1 .. k0 + n], its values ARGV[a0 + 1 .. a0 + 2n].
-- Phase one decides on a tentative copy of the levels (mine), so a refusal changes nothing;
-- phase two commits it into the batch's cache.
local function admit(k0, a0, n, lease, cost, kinds)
  local mine = {}
  local buckets = false

  for i = 1, n do
    local key = KEYS[k0 + i]
    local kind = string.sub(kinds, i, i)
    local a = tonumber(ARGV[a0 + 2 * i - 1])
    if kind ~= 'c' then
      buckets = true
      local rate = a
      local burst = tonumber(ARGV[a0 + 2 * i])
      local need = 1
      if kind == 't' then
        need = cost
        if need > burst then
          return {i, -2}
        end
      end
      local tokens = mine[key]
      if tokens == nil then
        tokens = bucket(key, rate)
        if tokens == nil then
          tokens = burst -- a bucket starts full
        end
      end
      -- Clamping here also applies a reload that lowered the burst.
      if tokens > burst then
        tokens = burst
      end
      if tokens < need then
        -- Always >= 1 ms: the bucket lacks a positive amount.
        return {i, math.ceil(stamp[key] - now + (need - tokens) * 1000 / rate)}
      end
      mine[key] = tokens - need
    else
      local limit = a
      if limit < 1 then
        return {i, -1} -- a closed limiter; no need to look at the set
      end
      local count = held[key]
      if count == nil then
        count = redis.call('ZCARD', key)
        held[key] = count
      end
      -- Expired leases are only swept when they are in the way.
      if count >= limit then
        count = count - redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
        held[key] = count
        if count >= limit then
          return {i, -1}
        end
      end
    end
  end

  -- Commit, and find the most restrictive bucket of each kind: index, whole units left, ms
  -- until full (plain locals, not tables: this runs for every admitted request).
  local ri, rleft, rfull, ti, tleft, tfull = 0, 0, 0, 0, 0, 0
  local done = {}
  for i = 1, n do
    local key = KEYS[k0 + i]
    local kind = string.sub(kinds, i, i)
    if not done[key] then
      done[key] = true
      if kind ~= 'c' then
        local burst = tonumber(ARGV[a0 + 2 * i])
        local tokens = mine[key]
        level[key], last[key] = tokens, a0 + 2 * i - 1
        -- Gone once it would be full again (measured from its stamp, which may be ahead of now).
        local full_ms = math.ceil(stamp[key] - now + (burst - tokens) * 1000 / tonumber(ARGV[a0 + 2 * i - 1]))
        local left = math.floor(tokens)
        if kind == 'r' then
          if ri == 0 or left < rleft then
            ri, rleft, rfull = i, left, full_ms
          end
        elseif ti == 0 or left < tleft then
          ti, tleft, tfull = i, left, full_ms
        end
      else
        held[key] = held[key] + 1
        local before = added[key]
        if before == nil then
          added[key] = lease
        elseif type(before) == 'string' then
          added[key] = {expiry, before, expiry, lease}
        else
          before[#before + 1] = expiry
          before[#before + 1] = lease
        end
      end
    end
  end
  if not buckets then
    return 0
  end
  return {0, ri, rleft, rfull, ti, tleft, tfull}
end

local results = {}
local k0 = 0
local a = 3
for r = 1, tonumber(ARGV[1]) do
  local lease = ARGV[a]
  local cost = tonumber(ARGV[a + 1])
  local kinds = ARGV[a + 2]
  local n = #kinds
  results[r] = admit(k0, a + 2, n, lease, cost, kinds)
  k0 = k0 + n
  a = a + 3 + 2 * n
end

-- The writes of the whole batch, one set per key (the order is of no consequence: the script
-- runs atomically and replicates its effects).
-- A bucket must live until it would be full again. Its 'exp' field says when it will expire
-- (admit.lua and release.lua keep it equal to the expiry they set, and never shorten it), so
-- PEXPIRE runs only when that is too soon, and then gives a second of slack beyond: about once
-- a second per bucket, not per admission.
for key, tokens in pairs(level) do
  local at = last[key]
  local burst = tonumber(ARGV[at + 1])
  local idle = math.ceil(stamp[key] - now + (burst - tokens) * 1000 / tonumber(ARGV[at])) + SLACK_MS
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
for key, leases in pairs(added) do
  if type(leases) == 'string' then
    redis.call('ZADD', key, expiry, leases)
  else
    -- In slices: unpack's results go on Lua's C stack, which holds a few thousand values.
    for first = 1, #leases, ZADD_SLICE do
      redis.call('ZADD', key, unpack(leases, first, math.min(first + ZADD_SLICE - 1, #leases)))
    end
  end
  -- Never shorten the key's life below a lease that an older, longer ttl granted. The key is
  -- given a second of slack beyond that, so that this PEXPIRE runs about once a second per
  -- semaphore rather than on every admission.
  if redis.call('PTTL', key) < keep then
    redis.call('PEXPIRE', key, keep + SLACK_MS)
  end
end
return results
