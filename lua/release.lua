-- release.lua: give back permits, in one call for every semaphore of one lease or of many.
--
-- KEYS[i]   a semaphore (<prefix>:{<tag>}:cc:<limiter_id>) that a lease was admitted into
-- ARGV[i]   the lease id to remove from KEYS[i]
--
-- A worker sends the releases of one event-loop iteration together: the pairs need not share a
-- lease. Returns how many pairs still held their lease. A lease that was no longer there had
-- expired and been swept already; that is harmless, its permit came back then.

local released = 0
for i = 1, #KEYS do
  released = released + redis.call('ZREM', KEYS[i], ARGV[i])
end
return released
