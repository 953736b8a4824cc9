//! The Lua scripts that keep each id's log consistent in Redis.
//!
//! Every operation on a log is one script, so it is atomic: the epoch, the
//! sequence counter, the delivery position and the stream move together, and
//! the wake-up is published in the same step as the append that causes it.
//!
//! Layout, for a key prefix `P` and a client id `ID`:
//! - `P:log:ID`, a stream; entry ids are `<seq>-0`, fields `d` (data), `t`
//!   (content type, may be empty), `s` (status, may be empty), `h` (headers
//!   as `name: value` lines, may be empty) and `at` (Redis time in ms when
//!   appended);
//! - `P:meta:ID`, a hash: `epoch` (decimal u64, kept as a string since Lua
//!   numbers are doubles), `seq` (last sequence number given), `delivered`
//!   (last sequence number committed);
//! - `P:wake:ID`, the pub/sub channel a node subscribes to while it holds
//!   polls for `ID`.
//!
//! Both keys get the id's idle TTL on every access, so an idle id vanishes
//! whole; a log found without its meta hash is an orphan and is dropped.

/// Shared by every script: open (or create) the meta hash, drop events older
/// than the TTL, and compute the sequence number of the oldest kept event.
const PRELUDE: &str = r#"
local log, meta = KEYS[1], KEYS[2]
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

local function open(epoch_candidate)
  local epoch = redis.call('HGET', meta, 'epoch')
  if not epoch then
    epoch = epoch_candidate
    redis.call('DEL', log)
    redis.call('HSET', meta, 'epoch', epoch, 'seq', 0)
  end
  return epoch
end

local function seq_of(entry_id)
  return tonumber(string.match(entry_id, '^(%d+)'))
end

-- Events are appended in time order, so the expired ones are a prefix.
local function expire(ttl_ms)
  local cutoff = now - ttl_ms
  while true do
    local batch = redis.call('XRANGE', log, '-', '+', 'COUNT', 32)
    if #batch == 0 then return end
    local keep = nil
    for _, entry in ipairs(batch) do
      local fields = entry[2]
      local at = 0
      for i = 1, #fields, 2 do
        if fields[i] == 'at' then at = tonumber(fields[i + 1]) end
      end
      if at > cutoff then keep = entry[1]; break end
    end
    if keep then
      redis.call('XTRIM', log, 'MINID', keep)
      return
    end
    redis.call('XTRIM', log, 'MINID', string.format('%d-0', seq_of(batch[#batch][1]) + 1))
  end
end

local function first_seq(next_seq)
  local oldest = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)
  if #oldest == 0 then return next_seq end
  return seq_of(oldest[1][1])
end

local function touch(idle_ttl_ms)
  redis.call('PEXPIRE', log, idle_ttl_ms)
  redis.call('PEXPIRE', meta, idle_ttl_ms)
end
"#;

/// KEYS: log, meta. ARGV: data, content type, capacity, event TTL ms, idle
/// TTL ms, epoch candidate, wake channel, wake message, status, headers.
/// Returns `{epoch, seq}`.
const APPEND: &str = r#"
local epoch = open(ARGV[6])
local seq = redis.call('HINCRBY', meta, 'seq', 1)
redis.call('XADD', log, 'MAXLEN', ARGV[3], string.format('%d-0', seq),
  'd', ARGV[1], 't', ARGV[2], 's', ARGV[9], 'h', ARGV[10], 'at', now)
expire(tonumber(ARGV[4]))
touch(ARGV[5])
redis.call('PUBLISH', ARGV[7], ARGV[8])
return {epoch, seq}
"#;

/// KEYS: log, meta. ARGV: mode (`c`: after a cursor, `d`: after the delivery
/// position, `s`: from the oldest kept event), cursor epoch, cursor seq, max events, event TTL ms, idle TTL
/// ms, epoch candidate.
/// Returns `{epoch, position seq, gap (0/1), entries}`; for mode `c` the
/// position is the client's own cursor and the returned seq is unused.
const READ: &str = r#"
local epoch = open(ARGV[7])
expire(tonumber(ARGV[5]))
touch(ARGV[6])
local next_seq = tonumber(redis.call('HGET', meta, 'seq')) + 1
local start = first_seq(next_seq) - 1
local after, gap, position
if ARGV[1] == 'c' then
  local seq = tonumber(ARGV[3])
  if ARGV[2] == epoch and seq < next_seq then
    after = seq
    gap = seq < start
  else
    after = start
    gap = true
  end
  position = seq
elseif ARGV[1] == 's' then
  after = start
  gap = false
  position = start
else
  local delivered = redis.call('HGET', meta, 'delivered')
  if delivered then
    after = tonumber(delivered)
    gap = after < start
  else
    after = start
    gap = false
  end
  position = after
end
local from = math.max(after, start) + 1
local entries = redis.call('XRANGE', log, string.format('%d-0', from), '+', 'COUNT', ARGV[4])
return {epoch, string.format('%d', position), gap and 1 or 0, entries}
"#;

/// KEYS: log, meta. ARGV: epoch, seq, idle TTL ms.
/// Moves the delivery position forward, never back, never past the log.
const COMMIT: &str = r#"
local epoch = redis.call('HGET', meta, 'epoch')
if epoch ~= ARGV[1] then return 0 end
local seq = tonumber(ARGV[2])
local last = tonumber(redis.call('HGET', meta, 'seq'))
local delivered = tonumber(redis.call('HGET', meta, 'delivered') or '0')
if seq <= last and seq > delivered then
  redis.call('HSET', meta, 'delivered', ARGV[2])
end
touch(ARGV[3])
return 1
"#;

/// No KEYS. ARGV: scan cursor, key pattern of the meta hashes, batch size,
/// meta key prefix, log key prefix.
/// Returns `{next cursor, ids seen, events in their logs}`: every id has a
/// meta hash, but only ids that had an event have a log.
const COUNT: &str = r#"
local page = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3], 'TYPE', 'hash')
local events = 0
local skip = string.len(ARGV[4]) + 1
for _, key in ipairs(page[2]) do
  events = events + redis.call('XLEN', ARGV[5] .. string.sub(key, skip))
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
            append: Script::new(APPEND, true),
            read: Script::new(READ, true),
            commit: Script::new(COMMIT, true),
            count: Script::new(COUNT, false),
        }
    }
}
