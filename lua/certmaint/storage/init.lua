--- certmaint.storage: the storage backends a policy can name, and the
-- contract every backend keeps (spec/contract/storage_spec.lua checks it).
--
--   storage = certmaint.storage.file { root = "/var/lib/certmaint" }
--   storage = certmaint.storage.etcd { endpoints = { "http://127.0.0.1:2379" } }
--   storage = certmaint.storage.memory()
--
-- Contract v2.  EVERY METHOD MAY WAIT: a network backend (etcd) yields to the
-- loop while its request is in flight, so call storage only from a loop task
-- (loop.spawn); file and memory happen not to yield except while lock() waits.
-- Keys are "/"-separated, without empty, "." or ".." components; a bad key, a
-- bad option or a wrong argument type raises (a caller's bug); expected
-- failures return nil, err, code.
--
--   load(key)                  -> value | nil, err, "ENOENT"|"EISDIR"|"toobig"|code
--   load_many(keys)            -> found, failed: found[key] = value;
--                                 failed[key] = {message =, code =} ("ENOENT", ...)
--   load_into_cache(cache, keys, opts) -> r: the PEM chains at keys added to a
--                                 core cache (cache:add_many's result; state
--                                 "missing" where a key is not stored); opts are
--                                 add_many's plus companions = {key, ...} that must
--                                 exist beside each (storage.common has a generic one)
--   start_load_into_cache(cache, keys, opts) -> batch (optional: engine.load
--                                 falls back to storage.common's over load_into_cache):
--                                 the same in two steps;
--                                 batch:finish() -> r adds them, batch:drop() gives
--                                 up (also its __close/__gc). The file backend reads
--                                 and parses on its threads in between, while the
--                                 caller runs (start-up binds the previous batch)
--   start_load_certificates(cache, issuer_key, names, opts) -> batch (optional:
--                                 storage.common.start_load_certificates falls back to
--                                 start_load_into_cache over keys.cert_files): the same
--                                 for the certificates of names (their sets under
--                                 certificates/<issuer_key>/), opts.keys = true checking
--                                 each private key exists; the file backend builds the
--                                 paths in C (the start-up load's hot path)
--   clean_scan{expired_before = t, temp_before = t} -> scan | nil, err, code (optional:
--                                 the clean pass falls back to list + load_into_cache +
--                                 clean_temp): one walk finding the certificates under
--                                 certificates/ whose leaf's notAfter <= expired_before
--                                 (scan.expired = {{key, not_after, id}}), those that
--                                 cannot be read or parsed (scan.failed = {{key, error,
--                                 code}}), how many (scan.certificates), and the temp
--                                 files of unfinished writes older than temp_before
--                                 (scan.temp = {key}); the file backend reads on threads
--   delete_many(keys [, {prune_empty = true}]) -> result | nil, err, code, result
--                                 (optional: the clean pass deletes one key at a time
--                                 without it): result[key] = "removed" | "missing" | false;
--                                 the file backend syncs each folder once, and with
--                                 prune_empty removes a folder the files leave empty
--   store(key, value [, {mode = "0644"}]) -> true | nil, err, code (private keys 0600)
--   delete(key)                -> true | nil, err, code (a prefix with all below it)
--   exists(key)                -> boolean (files and prefixes)
--   list(prefix, recursive)    -> sorted keys | nil, err, "ENOENT"|"ENOTDIR"
--   stat(key)                  -> {key, size, modified, terminal} | nil, err, code
--   lock(name [, {timeout = s}]) -> lock | nil, err, "locked"|"timeout"|code
--        waits (polling every poll_interval) inside a loop task; outside one a
--        busy lock fails at once with "locked".  Not re-entrant.
--   try_lock(name)             -> lock | false, holder | nil, err, code (one attempt)
--   unlock(lock_or_name)       -> true | nil, err, "notheld"|code
--   refresh_locks()            -> refreshed, lost_names (the heartbeat: every
--                                 backend.heartbeat_interval seconds, a field,
--                                 5 s when the backend has none)
--   commit{put = {[key] = value}, delete = {key, ...}, fence = lock}
--                              -> true | nil, err, "fenced"|code: all of it or
--        none of it (after recover(), even across a crash); "fenced" when fence
--        is no longer the lock's current grant (released, lost, taken over):
--        nothing is changed then
--   recover()                  -> rolled_forward, discarded | nil, err, code:
--        finish what a crash left of commits (cheap when nothing is pending)
--   describe()                 -> "file:/var/lib/certmaint", "memory:1", ...
--   close()                    -> true | nil, err, code (optional): give up what
--        the instance holds; the daemon calls it once on shutdown, after the
--        jobs (etcd revokes its leases, so a peer takes the names at once)
--   check_root(create)         -> true, created | nil, err, code  (optional: backends
--        with a root that can be missing; file's says "storage root X does not
--        exist", "ENOENT", or makes it when create is true)
--
-- A lock is a table {name, key, token, grant, owner, acquired}: token is the
-- fencing token, an integer larger for every grant of that lock name, across
-- every instance sharing the storage and across restarts.
local M = {}

function M.file(opts)
  return require("certmaint.storage.file").new(opts)
end

function M.etcd(opts)
  return require("certmaint.storage.etcd").new(opts)
end

function M.memory(opts)
  return require("certmaint.storage.memory").new(opts)
end

--- The methods every backend has (the contract spec checks each).
M.METHODS = { "load", "load_many", "load_into_cache", "store", "delete", "exists", "list", "stat", "lock",
  "try_lock", "unlock", "refresh_locks", "commit", "recover", "describe" }

return M
