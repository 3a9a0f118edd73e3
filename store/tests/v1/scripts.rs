//! Format 1's scripts exactly as webhook-relay shipped them before format 2 (a frozen copy
//! of `store/src/scripts.rs` at commit b467986), so the migration tests start from data the
//! old relay really wrote. Not built into the relay.
#![allow(dead_code)]

use std::sync::LazyLock;

/// A script's source and its SHA1 (the `EVALSHA` name).
pub struct LuaScript {
    source: String,
    hash: String,
}

impl LuaScript {
    pub fn source(&self) -> &str {
        &self.source
    }
    pub fn hash(&self) -> &str {
        &self.hash
    }
}

/// The state moves every script shares, defined once: server time, fencing tokens,
/// leaving a lease, freeing an event's data, reviving a dead letter, recovering expired leases.
const PRELUDE: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- Server time in ms and in microseconds, from one TIME call.
local function clock()
  local t = redis.call('TIME')
  local s, us = tonumber(t[1]), tonumber(t[2])
  return s * 1000 + math.floor(us / 1000), s * 1000000 + us
end
-- Integers as Redis stores them (no exponent): tokens and scores above 2^31.
local function int(n)
  return string.format('%.0f', n)
end
-- The base of the next fencing tokens (the first token is base + 1): above every token
-- issued before (the counter), and at least the server's clock in microseconds, so tokens
-- keep growing when Redis comes back from older data (a restart from an older AOF/RDB, a
-- failover to a lagging replica) that rolled the counter back. Microseconds stay exact in
-- Lua's doubles (below 2^53) until the year 2255.
local function token_base(fence, now_us)
  return math.max(tonumber(redis.call('GET', fence) or '0'), now_us - 1)
end
-- The event is no longer claimed by anyone.
local function unlease(inflight, lease, id)
  redis.call('ZREM', inflight, id)
  redis.call('HDEL', lease, id)
end
-- Frees what an event holds besides its place in the sets.
local function drop_payload(body, meta, attempts, id)
  redis.call('HDEL', body, id)
  redis.call('HDEL', meta, id)
  redis.call('HDEL', attempts, id)
end
-- A dead letter becomes due now, with its attempts reset, undelivered again.
local function revive(dead, due, attempts, pending, id, now)
  redis.call('ZREM', dead, id)
  redis.call('ZADD', due, now, id)
  redis.call('HSET', attempts, id, 0)
  redis.call('ZADD', pending, now, id)
end
-- Expired leases go back to due, at most `limit` per call so a script stays short.
local function recover(inflight, lease, due, now, limit)
  local ids = redis.call('ZRANGEBYSCORE', inflight, '-inf', now, 'LIMIT', 0, limit)
  for _, id in ipairs(ids) do
    unlease(inflight, lease, id)
    redis.call('ZADD', due, now, id)
  end
  return #ids
end
"#;

fn script(body: &str) -> LuaScript {
    let source = format!("{PRELUDE}\n{body}");
    let hash = redis::Script::new(&source).get_hash().to_string();
    LuaScript { source, hash }
}

/// KEYS: seen, due, body, meta, attempts, pending.
/// ARGV: dedup window ms, then (id, body, content type) per event.
/// Returns {now, s1, s2, ...}: per event 1 when stored, 0 for a duplicate (seen within the
/// window, still stored, or earlier in the same batch).
pub static ENQUEUE: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        r#"
local now = now_ms()
local window = tonumber(ARGV[1])
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 64)
if #expired > 0 then redis.call('ZREM', KEYS[1], unpack(expired)) end
local out = {now}
for i = 2, #ARGV, 3 do
  local id = ARGV[i]
  local until_ms = redis.call('ZSCORE', KEYS[1], id)
  if (until_ms and tonumber(until_ms) > now) or redis.call('HEXISTS', KEYS[3], id) == 1 then
    out[#out + 1] = 0
  else
    if window > 0 then redis.call('ZADD', KEYS[1], now + window, id) end
    redis.call('HSET', KEYS[3], id, ARGV[i + 1])
    redis.call('HSET', KEYS[4], id, cjson.encode({receivedAt = now, contentType = ARGV[i + 2]}))
    redis.call('HSET', KEYS[5], id, 0)
    redis.call('ZADD', KEYS[6], now, id)
    redis.call('ZADD', KEYS[2], now, id)
    out[#out + 1] = 1
  end
end
return out
"#,
    )
});

/// KEYS: due, inflight, lease, body, meta, attempts, fence, pending, claim record.
/// ARGV: max events, lease ms.
/// Returns {now, next due score or false, next lease deadline or false, recovered, {{id, token,
/// attempt, scheduled, body, meta, lease deadline}, ...}}.
///
/// The claim record (`whr:{R}:claim:<claim id>`, a key per call with an id the caller made
/// up, expiring with the lease) makes a retried claim idempotent: when the reply of a claim
/// is lost (a timeout, a dropped connection) the caller sends the same call again, and
/// instead of claiming more it gets back the events the first call claimed and still holds,
/// so they are not stranded in flight for a whole lease.
pub static CLAIM: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        r#"
local now, now_us = clock()
local lease_ms = tonumber(ARGV[2])
local out = {}
local function next_scores()
  local next_due = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2] or false
  local next_lease = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')[2] or false
  return next_due, next_lease
end
local prior = redis.call('GET', KEYS[9])
if prior then
  local first, n = string.match(prior, '^(%d+) (%d+)$')
  first, n = tonumber(first), tonumber(n)
  for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    local token = tonumber(redis.call('HGET', KEYS[3], id) or '0')
    if token >= first and token < first + n then
      local body = redis.call('HGET', KEYS[4], id)
      if body then
        out[#out + 1] = {id, token, tonumber(redis.call('HGET', KEYS[6], id) or '1'), now, body,
          redis.call('HGET', KEYS[5], id) or '{}', redis.call('ZSCORE', KEYS[2], id)}
      end
    end
  end
  local next_due, next_lease = next_scores()
  return {now, next_due, next_lease, 0, out}
end
local recovered = recover(KEYS[2], KEYS[3], KEYS[1], now, 100)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[1]))
local base = token_base(KEYS[7], now_us)
local token = base
local deadline = now + lease_ms
for i = 1, #due, 2 do
  local id, scheduled = due[i], due[i + 1]
  redis.call('ZREM', KEYS[1], id)
  local body = redis.call('HGET', KEYS[4], id)
  if body then
    token = token + 1
    redis.call('ZADD', KEYS[2], deadline, id)
    redis.call('HSET', KEYS[3], id, int(token))
    local attempt = redis.call('HINCRBY', KEYS[6], id, 1)
    local meta = redis.call('HGET', KEYS[5], id) or '{}'
    out[#out + 1] = {id, token, attempt, scheduled, body, meta, deadline}
  else
    -- A due id without a body was deleted by hand; drop what is left of it.
    drop_payload(KEYS[4], KEYS[5], KEYS[6], id)
    redis.call('ZREM', KEYS[8], id)
  end
end
if token > base then
  redis.call('SET', KEYS[7], int(token))
  redis.call('SET', KEYS[9], int(base + 1) .. ' ' .. int(token - base), 'PX', lease_ms)
end
local next_due, next_lease = next_scores()
return {now, next_due, next_lease, recovered, out}
"#,
    )
});

/// Outcome writes (ack, reschedule, dead-letter) take the lease's deadline on a retry
/// (`0` on a first call). When a retry finds the lease no longer held by its token, the
/// first call may have run and only its reply been lost. Before the deadline nobody else can
/// have taken the event (only the holder moves an event out of `inflight` before its lease
/// expires, and `delete` refuses events in flight), so the retry reports what the first call
/// did when the event's state shows it: gone for an ack, stored and not dead for a
/// reschedule, in `dead` for a dead-letter.
const RETRIED: &str = r#"
local function first_call_ran(lease_holder, token, deadline, now)
  return deadline > 0 and now < deadline and lease_holder ~= token
end
"#;

/// KEYS: inflight, lease, body, meta, attempts, pending.
/// ARGV: id1, token1, deadline1, id2, ... (deadline: see [`RETRIED`]). Returns one 1 (acked,
/// now or by the first call of a retry) or 0 (the token no longer holds the lease) per
/// event, so a worker can ack a batch in one call.
pub static ACK: LazyLock<LuaScript> = LazyLock::new(|| {
    script(&format!(
        "{RETRIED}\n{}",
        r#"
local now = now_ms()
local out = {}
for i = 1, #ARGV, 3 do
  local id, token = ARGV[i], ARGV[i + 1]
  local holder = redis.call('HGET', KEYS[2], id)
  if holder == token then
    unlease(KEYS[1], KEYS[2], id)
    drop_payload(KEYS[3], KEYS[4], KEYS[5], id)
    redis.call('ZREM', KEYS[6], id)
    out[#out + 1] = 1
  elseif first_call_ran(holder, token, tonumber(ARGV[i + 2]), now) and redis.call('HEXISTS', KEYS[3], id) == 0 then
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"#
    ))
});

/// KEYS: inflight, lease, due, meta, body, dead.
/// ARGV: id, token, delay ms, meta JSON, deadline (see [`RETRIED`]). Returns the new due
/// score, or false if the lease was lost.
pub static RESCHEDULE: LazyLock<LuaScript> = LazyLock::new(|| {
    script(&format!(
        "{RETRIED}\n{}",
        r#"
local id = ARGV[1]
local now = now_ms()
local holder = redis.call('HGET', KEYS[2], id)
if holder ~= ARGV[2] then
  if first_call_ran(holder, ARGV[2], tonumber(ARGV[5]), now) and redis.call('HEXISTS', KEYS[5], id) == 1
    and not redis.call('ZSCORE', KEYS[6], id) then
    return redis.call('ZSCORE', KEYS[3], id) or now
  end
  return false
end
local at = now + tonumber(ARGV[3])
unlease(KEYS[1], KEYS[2], id)
redis.call('ZADD', KEYS[3], at, id)
redis.call('HSET', KEYS[4], id, ARGV[4])
return at
"#
    ))
});

/// Drops dead letters older than max age, then the oldest beyond max entries (bounded).
const TRIM_DEAD: &str = r#"
local function drop(dead, body, meta, attempts, id)
  redis.call('ZREM', dead, id)
  drop_payload(body, meta, attempts, id)
end
local function trim(dead, body, meta, attempts, now, max_age, max_entries, limit)
  local n = 0
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', dead, '-inf', '(' .. (now - max_age), 'LIMIT', 0, limit)) do
    drop(dead, body, meta, attempts, id); n = n + 1
  end
  local excess = redis.call('ZCARD', dead) - max_entries
  if excess > 0 then
    for _, id in ipairs(redis.call('ZRANGE', dead, 0, math.min(excess, limit) - 1)) do
      drop(dead, body, meta, attempts, id); n = n + 1
    end
  end
  return n
end
"#;

/// KEYS: inflight, lease, dead, meta, body, attempts, pending.
/// ARGV: id, token, meta JSON, max age ms, max entries, deadline (see [`RETRIED`]).
/// Returns {1, trimmed} when dead-lettered (now or by the first call of a retry), {0, 0} if
/// the lease was lost.
pub static DEAD: LazyLock<LuaScript> = LazyLock::new(|| {
    script(&format!(
        "{RETRIED}\n{TRIM_DEAD}\n{}",
        r#"
local id = ARGV[1]
local now = now_ms()
local holder = redis.call('HGET', KEYS[2], id)
if holder ~= ARGV[2] then
  if first_call_ran(holder, ARGV[2], tonumber(ARGV[6]), now) and redis.call('ZSCORE', KEYS[3], id) then
    return {1, 0}
  end
  return {0, 0}
end
unlease(KEYS[1], KEYS[2], id)
redis.call('ZREM', KEYS[7], id)
redis.call('ZADD', KEYS[3], now, id)
redis.call('HSET', KEYS[4], id, ARGV[3])
return {1, trim(KEYS[3], KEYS[5], KEYS[4], KEYS[6], now, tonumber(ARGV[4]), tonumber(ARGV[5]), 100)}
"#
    ))
});

/// KEYS: dead, body, meta, attempts. ARGV: max age ms, max entries. Returns how many were dropped.
pub static TRIM: LazyLock<LuaScript> = LazyLock::new(|| {
    script(&format!(
        "{TRIM_DEAD}\n{}",
        "return trim(KEYS[1], KEYS[2], KEYS[3], KEYS[4], now_ms(), tonumber(ARGV[1]), tonumber(ARGV[2]), 1000)"
    ))
});

/// KEYS: inflight, lease, due, attempts.
/// ARGV: id, token. Gives a claimed event back (due now) without counting the attempt.
pub static RELEASE: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        r#"
local id = ARGV[1]
if redis.call('HGET', KEYS[2], id) ~= ARGV[2] then return 0 end
unlease(KEYS[1], KEYS[2], id)
redis.call('ZADD', KEYS[3], now_ms(), id)
local a = tonumber(redis.call('HGET', KEYS[4], id) or '1')
if a > 0 then redis.call('HSET', KEYS[4], id, a - 1) end
return 1
"#,
    )
});

/// KEYS: inflight, lease, due. ARGV: max. Returns how many expired leases went back to due.
pub static RECOVER: LazyLock<LuaScript> =
    LazyLock::new(|| script("return recover(KEYS[1], KEYS[2], KEYS[3], now_ms(), tonumber(ARGV[1]))"));

/// KEYS: due, dead, attempts, pending, inflight.
/// ARGV: id. Makes a dead or due event due now with attempts reset.
/// Returns 'dead' or 'due' (its state before), 'inflight' (refused), or 'missing'.
pub static REPLAY: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        r#"
local id = ARGV[1]
local now = now_ms()
if redis.call('ZSCORE', KEYS[2], id) then
  revive(KEYS[2], KEYS[1], KEYS[3], KEYS[4], id, now)
  return 'dead'
end
if redis.call('ZSCORE', KEYS[1], id) then
  redis.call('ZADD', KEYS[1], now, id)
  redis.call('HSET', KEYS[3], id, 0)
  return 'due'
end
if redis.call('ZSCORE', KEYS[5], id) then return 'inflight' end
return 'missing'
"#,
    )
});

/// KEYS: due, dead, attempts, pending.
/// ARGV: since ms, until ms, batch. Moves up to `batch` dead letters dead-lettered in
/// [since, until] to due now. Returns how many moved.
pub static REPLAY_DEAD_RANGE: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        r#"
local now = now_ms()
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[1], ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  revive(KEYS[2], KEYS[1], KEYS[3], KEYS[4], id, now)
end
return #ids
"#,
    )
});

/// KEYS: due, dead, inflight, lease, body, meta, attempts, pending.
/// ARGV: id. Drops every trace of the event except its dedup entry. Returns 1 if it existed,
/// 0 if not, and -1 (nothing done) for an event in flight: its lease holder alone may end
/// that state (outcome retries rely on it, see [`RETRIED`]).
pub static DELETE: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        r#"
local id = ARGV[1]
if redis.call('ZSCORE', KEYS[3], id) then return -1 end
local existed = redis.call('HEXISTS', KEYS[5], id)
redis.call('ZREM', KEYS[1], id)
redis.call('ZREM', KEYS[2], id)
unlease(KEYS[3], KEYS[4], id)
drop_payload(KEYS[5], KEYS[6], KEYS[7], id)
redis.call('ZREM', KEYS[8], id)
return existed
"#,
    )
});

/// KEYS: due, inflight, dead, pending.
/// Returns {due, inflight, dead, oldest pending score or false, now}.
pub static STATS: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        r#"
local oldest = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')[2] or false
return {redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2]), redis.call('ZCARD', KEYS[3]), oldest, now_ms()}
"#,
    )
});

/// KEYS: due, inflight, dead, body, meta, attempts.
/// ARGV: id. Returns {state, score, attempts, meta, body} or false when unknown.
pub static GET: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        r#"
local id = ARGV[1]
local body = redis.call('HGET', KEYS[4], id)
if not body then return false end
local state, score = 'unknown', '0'
for i, name in ipairs({'due', 'inflight', 'dead'}) do
  local s = redis.call('ZSCORE', KEYS[i], id)
  if s then state, score = name, s; break end
end
return {state, score, redis.call('HGET', KEYS[6], id) or '0', redis.call('HGET', KEYS[5], id) or '{}', body}
"#,
    )
});

/// KEYS: the state's set (due, inflight or dead), attempts, meta.
/// ARGV: limit, cursor score ('' for the start), cursor id.
/// Returns up to `limit` {id, score, attempts, meta}, oldest first, strictly after the
/// cursor in the set's own order (score, then id byte by byte): a position, not an offset,
/// so members that stay in the set are never skipped or repeated while others move.
pub static LIST: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        r#"
-- Byte order as Redis sorts equal scores (Lua's `<` follows the locale; this does not).
local function bytes_after(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x > y end
  end
  return #a > #b
end
local set, limit = KEYS[1], tonumber(ARGV[1])
local start = 0
if ARGV[2] ~= '' then
  local score, after = ARGV[2], ARGV[3]
  -- Members scored exactly `score` hold ranks [lo, hi) in byte order; find the first after the cursor id.
  local lo = redis.call('ZCOUNT', set, '-inf', '(' .. score)
  local hi = lo + redis.call('ZCOUNT', set, score, score)
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if bytes_after(redis.call('ZRANGE', set, mid, mid)[1], after) then hi = mid else lo = mid + 1 end
  end
  start = lo
end
local page = redis.call('ZRANGE', set, start, start + limit - 1, 'WITHSCORES')
local out = {}
for i = 1, #page, 2 do
  local id = page[i]
  out[#out + 1] = {id, page[i + 1], redis.call('HGET', KEYS[2], id) or '0', redis.call('HGET', KEYS[3], id) or '{}'}
end
return out
"#,
    )
});

/// KEYS: any key of the relay (routes the call to its node). Returns `redis.REDIS_VERSION`,
/// nil before Redis 7.0.
pub static VERSION: LazyLock<LuaScript> = LazyLock::new(|| script("return redis.REDIS_VERSION"));

/// KEYS: any key of the relay (routes the call to its node). Returns {used memory that counts
/// against maxmemory, maxmemory (0: no limit)}, from `INFO memory` of that node.
pub static MEMORY: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        r#"
local info = redis.call('INFO', 'memory')
local function field(name)
  return tonumber(string.match(info, name .. ':(%d+)')) or 0
end
return {field('used_memory') - field('mem_not_counted_for_evict'), field('maxmemory')}
"#,
    )
});
