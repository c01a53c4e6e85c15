-- check-access.lua: a no-op whose only purpose is Redis's ACL check of the call.
-- KEYS[1..n] keys the caller will use (one Cluster slot per call)
-- ARGV: none
-- Returns 0. Redis checks the caller's right to EVALSHA and to every key in KEYS before the
-- script runs: a refusal comes back as a NOPERM error, at once, naming the command or "keys".
return 0
