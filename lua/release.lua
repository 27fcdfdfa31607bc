-- release.lua: give back the permits of one lease, in every semaphore it holds, in one call.
--
-- KEYS[i]   the semaphores (<prefix>:{<tag>}:cc:<limiter_id>) the lease was admitted into
-- ARGV[1]   lease id
--
-- Returns how many semaphores still held the lease. Fewer than #KEYS means the lease had
-- already expired and been swept; that is harmless, the permit was recovered then.

local released = 0
for i = 1, #KEYS do
  released = released + redis.call('ZREM', KEYS[i], ARGV[1])
end
return released
