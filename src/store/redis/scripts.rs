//! The Lua scripts that keep each id's log consistent in Redis.
//!
//! Every operation on a log is one script, so it is atomic: the epoch, the
//! sequence number, the delivery position and the list move together, and
//! the wake-up is published in the same step as the append that causes it.
//!
//! Layout, for a key prefix `P` and a client id `ID`; every key and the
//! wake-up channel carry the hash tag `{ID}`, so that in a Redis Cluster they
//! live in one slot (a script may only touch the keys of one slot, and a
//! sharded channel is served by the shard that owns its slot):
//! - `P:{ID}:l`, a list of entries, oldest first; an entry is
//!   `<seq>,<at>,<len t>,<len s>,<len h>;` followed by the content type, the
//!   status, the headers (as `name: value` lines) and the data, where `at` is
//!   the Redis time in ms when it was appended. A list of small entries is a
//!   single listpack (a stream preallocates a 4 KB node per id);
//! - `P:{ID}:m`, a hash: `e` the epoch (decimal u64, kept as a string since
//!   Lua numbers are doubles), `q` the last sequence number given, `d` the
//!   last sequence number committed, `t` the sequence number of the newest
//!   event dropped from the list (expired or over capacity), `a` the
//!   attempt tokens of the last few appends with their sequence numbers
//!   (`token=seq,…`, newest first), so that an append sent again is
//!   answered, not applied twice;
//! - `P:{ID}:w`, the channel a node subscribes to while it holds polls for
//!   `ID` (a sharded channel on a cluster);
//! - `P:{ID}:i:<key>`, the cursor a publish with an idempotency key got, for
//!   the idempotency window.
//!
//! ## Sequence numbers survive a rollback
//! A sequence number is the Redis time in microseconds when the event was
//! appended, or the previous one plus 1 if that is larger. Redis can lose
//! acknowledged writes (a restart from an older RDB, an `everysec` crash, a
//! failover to a lagging replica); a plain counter would then hand out the
//! lost numbers again, and a client holding a lost event's cursor would be
//! answered with a newer event as if nothing lay between. Numbers from the
//! clock are not handed out twice while the clock does not go back by more
//! than what was lost, and a cursor naming a number the log never had is
//! known for what it is: a cursor from a lost history, answered with every
//! kept event and the gap flag.
//!
//! Both keys get the id's idle TTL on every access, so an idle id vanishes
//! whole; a list found without its meta hash is an orphan and is dropped.

/// Shared by every script: open (or create) the meta hash, drop expired
/// events, and find entries by sequence number.
const PRELUDE: &str = r#"
local log, meta = KEYS[1], KEYS[2]
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local now_us = tonumber(time[1]) * 1000000 + tonumber(time[2])

local function open(epoch_candidate)
  local epoch = redis.call('HGET', meta, 'e')
  if not epoch then
    epoch = epoch_candidate
    redis.call('DEL', log)
    redis.call('HSET', meta, 'e', epoch, 'q', 0, 't', 0)
  end
  return epoch
end

local function seq_of(entry)
  return tonumber(string.match(entry, '^(%d+),'))
end

local function at_of(entry)
  return tonumber(string.match(entry, '^%d+,(%d+),'))
end

-- Events are appended in time order, so the expired ones are a prefix; each
-- is looked at once more than it is kept.
local function expire(ttl_ms)
  local cutoff = now - ttl_ms
  local dropped = nil
  while true do
    local head = redis.call('LINDEX', log, 0)
    if not head or at_of(head) > cutoff then break end
    redis.call('LPOP', log)
    dropped = seq_of(head)
  end
  if dropped then
    redis.call('HSET', meta, 't', string.format('%d', dropped))
  end
end

local function touch(idle_ttl_ms)
  redis.call('PEXPIRE', log, idle_ttl_ms)
  redis.call('PEXPIRE', meta, idle_ttl_ms)
end
"#;

/// How many appends' attempt tokens the meta hash keeps: a resend comes
/// within milliseconds of its first try, a few appends later at most.
const ATTEMPTS_KEPT: usize = 4;

/// KEYS: log, meta, idempotency key (or any key of the id's slot).
/// ARGV: data, content type, capacity, event TTL ms, idle TTL ms, epoch
/// candidate, wake channel, wake message, status, headers, publish command
/// (`PUBLISH` or `SPUBLISH`), idempotency window ms (0: no key), attempt
/// token (hex; the same for every send of one append).
/// Returns `{epoch, seq, 1 if it was appended now / 0 if a retry}`.
const APPEND: &str = r#"
local window = tonumber(ARGV[12])
if window > 0 then
  local first = redis.call('GET', KEYS[3])
  if first then
    local epoch, seq = string.match(first, '^(%d+)-(%d+)$')
    if epoch and redis.call('HGET', meta, 'e') == epoch then
      return {epoch, seq, 0}
    end
  end
end
local token = ARGV[13]
local attempts = redis.call('HGET', meta, 'a')
if attempts then
  local seq = string.match(attempts, token .. '=(%d+)')
  if seq then
    return {redis.call('HGET', meta, 'e'), seq, 0}
  end
end
local epoch = open(ARGV[6])
local last = tonumber(redis.call('HGET', meta, 'q'))
local seq = string.format('%d', math.max(last + 1, now_us))
local kept, count = token .. '=' .. seq, 1
for attempt in string.gmatch(attempts or '', '[^,]+') do
  if count == ATTEMPTS_KEPT then break end
  kept, count = kept .. ',' .. attempt, count + 1
end
redis.call('HSET', meta, 'a', kept)
redis.call('RPUSH', log, string.format('%s,%d,%d,%d,%d;', seq, now, #ARGV[2], #ARGV[9], #ARGV[10])
  .. ARGV[2] .. ARGV[9] .. ARGV[10] .. ARGV[1])
redis.call('HSET', meta, 'q', seq)
local over = redis.call('LLEN', log) - tonumber(ARGV[3])
if over > 0 then
  local popped = redis.call('LPOP', log, over)
  redis.call('HSET', meta, 't', string.format('%d', seq_of(popped[#popped])))
end
expire(tonumber(ARGV[4]))
touch(ARGV[5])
if window > 0 then
  redis.call('SET', KEYS[3], epoch .. '-' .. seq, 'PX', window)
end
redis.call(ARGV[11], ARGV[7], ARGV[8])
return {epoch, seq, 1}
"#;

/// KEYS: log, meta. ARGV: mode (`c`: after a cursor, `d`: after the delivery
/// position, `s`: from the oldest kept event), cursor epoch, cursor seq, max
/// events, event TTL ms, idle TTL ms, epoch candidate.
/// Returns `{epoch, position seq, gap (0/1), entries}`; for mode `c` the
/// position is the client's own cursor and the returned seq is unused.
///
/// A read at the newest sequence number (the common empty read) touches no
/// entry. Otherwise the entry after the position is found by a binary search
/// over the list (entries are in sequence order), so a read fetches
/// O(log n) entries besides the ones it returns.
const READ: &str = r#"
local epoch = open(ARGV[7])
touch(ARGV[6])
local last = tonumber(redis.call('HGET', meta, 'q'))
if ARGV[1] == 'c' and ARGV[2] == epoch and tonumber(ARGV[3]) == last then
  return {epoch, ARGV[3], 0, {}}
end
expire(tonumber(ARGV[5]))
local trimmed = tonumber(redis.call('HGET', meta, 't'))
local n = redis.call('LLEN', log)

-- The index of the first entry after `seq`, and whether this log ever had
-- `seq`: the log's start (`trimmed`), an entry, or nothing kept after it.
-- A `seq` the log never had but within or past its kept range is from a
-- history Redis lost: sequence numbers come from the clock, so the entries
-- after it are the ones published since that history was lost (the client
-- has the older ones already).
local function after(seq)
  if seq == trimmed then return 0, true end
  if seq < trimmed then return 0, false end
  if seq > last then return n, false end
  local lo, hi = 0, n
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if seq_of(redis.call('LINDEX', log, mid)) <= seq then lo = mid + 1 else hi = mid end
  end
  if lo == 0 then return 0, false end
  return lo, seq_of(redis.call('LINDEX', log, lo - 1)) == seq
end

local from, gap, position = 0, false, string.format('%d', trimmed)
if ARGV[1] == 'c' then
  position = ARGV[3]
  if ARGV[2] == epoch then
    local index, known = after(tonumber(ARGV[3]))
    from, gap = index, not known
  else
    gap = true
  end
elseif ARGV[1] == 'd' then
  local delivered = redis.call('HGET', meta, 'd')
  if delivered then
    local index, known = after(tonumber(delivered))
    if known then
      from, position = index, delivered
    else
      gap = true
    end
  end
end
local entries = {}
if from < n then
  entries = redis.call('LRANGE', log, from, from + tonumber(ARGV[4]) - 1)
end
return {epoch, position, gap and 1 or 0, entries}
"#;

/// KEYS: log, meta. ARGV: epoch, seq, idle TTL ms.
/// Moves the delivery position forward, never back, never past the log.
const COMMIT: &str = r#"
local epoch = redis.call('HGET', meta, 'e')
if epoch ~= ARGV[1] then return 0 end
local seq = tonumber(ARGV[2])
local last = tonumber(redis.call('HGET', meta, 'q'))
local delivered = tonumber(redis.call('HGET', meta, 'd') or '0')
if seq <= last and seq > delivered then
  redis.call('HSET', meta, 'd', ARGV[2])
end
touch(ARGV[3])
return 1
"#;

/// No KEYS. ARGV: scan cursor, key pattern of the meta hashes, batch size.
/// Returns `{next cursor, ids seen, events in their logs}`: every id has a
/// meta hash, but only ids that had an event have a list. Counts the keys of
/// the node it runs on only.
const COUNT: &str = r#"
local page = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3], 'TYPE', 'hash')
local events = 0
for _, key in ipairs(page[2]) do
  events = events + redis.call('LLEN', string.sub(key, 1, -2) .. 'l')
end
return {page[1], #page[2], events}
"#;

/// A script and its SHA1, run with `EVALSHA` and loaded again when the
/// server has forgotten it (after a restart).
pub(super) struct Script {
    pub(super) source: String,
    pub(super) sha1: String,
}

impl Script {
    fn new(body: &str, with_prelude: bool) -> Script {
        let source = if with_prelude {
            format!("{PRELUDE}\n{body}")
        } else {
            body.to_owned()
        };
        let sha1 = fred::util::sha1_hash(&source);
        Script { source, sha1 }
    }
}

pub(super) struct Scripts {
    pub(super) append: Script,
    pub(super) read: Script,
    pub(super) commit: Script,
    pub(super) count: Script,
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        Scripts {
            append: Script::new(
                &APPEND.replace("ATTEMPTS_KEPT", &ATTEMPTS_KEPT.to_string()),
                true,
            ),
            read: Script::new(READ, true),
            commit: Script::new(COMMIT, true),
            count: Script::new(COUNT, false),
        }
    }
}
