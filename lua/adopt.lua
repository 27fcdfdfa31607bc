-- adopt.lua: the first call on every new connection; finds out whether Redis lost its data, and
-- if so puts back the permits this worker still holds, before it admits anything new.
--
-- KEYS[1]   the epoch marker <prefix>:{<tag>}:epoch, a random string that never expires
-- KEYS[i+1] a semaphore (<prefix>:{<tag>}:cc:<limiter_id>) one held lease is in
-- ARGV[1]   the epoch this worker last saw ("" before its first connection)
-- ARGV[2]   a fresh random epoch, stored when the marker is missing
-- ARGV[3]   lease ttl in ms: a re-registered lease expires at now + ttl, renewals carry it on
-- ARGV[i+3] the lease id held in KEYS[i+1]
--
-- Returns {epoch, readded}: the marker now stored, and how many leases were missing and put back.
-- The marker is missing after a restart without persistence or a failover to a replica that never
-- got it; a marker other than the one this worker saw means another worker found it missing and
-- wrote a new one. Either way the held leases go back with ZADD NX: one still there is untouched.

if redis.replicate_commands then
  redis.replicate_commands()
end

local epoch = redis.call('GET', KEYS[1])
if not epoch then
  redis.call('SET', KEYS[1], ARGV[2])
  epoch = ARGV[2]
end
local readded = 0
if epoch ~= ARGV[1] and #KEYS > 1 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
  local ttl = tonumber(ARGV[3])
  local expiry = math.floor(now + ttl)
  for i = 2, #KEYS do
    readded = readded + redis.call('ZADD', KEYS[i], 'NX', expiry, ARGV[i + 2])
    if redis.call('PTTL', KEYS[i]) < ttl + 1000 then
      redis.call('PEXPIRE', KEYS[i], ttl + 1000)
    end
  end
end
return {epoch, readded}
