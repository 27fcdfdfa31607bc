-- renew.lua: extend the permits of a request that is still running (a long stream).
--
-- KEYS[i]   the semaphores (<prefix>:{<tag>}:cc:<limiter_id>) the lease was admitted into
-- ARGV[1]   lease id
-- ARGV[2]   lease ttl in ms: the new expiry is now + ttl
--
-- Returns how many semaphores still held the lease. A lease that is gone was swept after it
-- expired and its permit may already belong to another request, so it is not re-created
-- (ZADD XX): this request then runs on without a permit rather than overfilling the limit.

if redis.replicate_commands then
  redis.replicate_commands()
end

local SLACK_MS = 1000

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local lease = ARGV[1]
local ttl = tonumber(ARGV[2])
local expiry = math.floor(now + ttl)
local keep = ttl + SLACK_MS

local renewed = 0
for i = 1, #KEYS do
  local key = KEYS[i]
  if redis.call('ZSCORE', key, lease) then
    redis.call('ZADD', key, 'XX', expiry, lease)
    if redis.call('PTTL', key) < keep then
      redis.call('PEXPIRE', key, keep)
    end
    renewed = renewed + 1
  end
end
return renewed
