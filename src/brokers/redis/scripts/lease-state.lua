-- lease-state.lua: who holds one entry now (read only), for a worker about to store an outcome
-- the broker does not fence itself (a result backend elsewhere).
-- KEYS[1] stream ${prefix}:stream:{Q}
-- ARGV[1] group, ARGV[2] this consumer, ARGV[3] entry id
-- Returns holderOf's answer (holder-of.lua, composed above): 0 this consumer, 1 someone else
-- runs it, 2 nobody holds it and it left the stream.
return holderOf(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
