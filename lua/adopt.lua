-- adopt.lua: the first call on every new connection. Puts back the permits this worker still holds
-- and removes again the ones it gave back lately, before it admits anything new on this node.
--
-- A new connection may reach a Redis that lost its data (a restart without persistence) or a
-- replica promoted by a failover that missed the last writes: leases granted there are gone, and
-- releases sent to the old master never arrived. Both are idempotent to repeat: ZADD NX leaves a
-- lease that is there alone, ZREM of a lease that is gone removes nothing.
--
-- KEYS[1]   the epoch marker <prefix>:{<tag>}:epoch, a random string that never expires
-- KEYS[2 .. H+1]        the semaphores of the held leases, one per (semaphore, lease) pair
-- KEYS[H+2 .. H+R+1]    the semaphores of the recently released leases
-- ARGV[1]   the epoch this worker last saw ("" before its first connection)
-- ARGV[2]   a fresh random epoch, stored when the marker is missing
-- ARGV[3]   lease ttl in ms: a lease put back expires at now + ttl, renewals carry it on
-- ARGV[4]   H, the number of held pairs
-- ARGV[5 ..]  the H held lease ids, then the R released lease ids, in the order of KEYS
--
-- Returns {epoch, readded, removed}: the marker now stored (missing means the data was lost; one
-- other than ARGV[1] means another worker found it missing), and how many leases were put back
-- and removed.

if redis.replicate_commands then
  redis.replicate_commands()
end

local epoch = redis.call('GET', KEYS[1])
if not epoch then
  redis.call('SET', KEYS[1], ARGV[2])
  epoch = ARGV[2]
end
local held = tonumber(ARGV[4])
local readded = 0
local removed = 0
if held > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
  local ttl = tonumber(ARGV[3])
  local expiry = math.floor(now + ttl)
  for i = 1, held do
    local key = KEYS[i + 1]
    readded = readded + redis.call('ZADD', key, 'NX', expiry, ARGV[i + 4])
    if redis.call('PTTL', key) < ttl + 1000 then
      redis.call('PEXPIRE', key, ttl + 1000)
    end
  end
end
for i = held + 2, #KEYS do
  removed = removed + redis.call('ZREM', KEYS[i], ARGV[i + 3])
end
return {epoch, readded, removed}
