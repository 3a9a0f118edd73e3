//! The Lua scripts behind every multi-step change (store format 2, see `store/README.md`).
//! Each receives all its keys through `KEYS` (one relay, one hash tag, one cluster slot)
//! and reads the clock with `TIME` on the server, so replicas with skewed clocks still
//! agree on what is due.
//!
//! Work per event is what the format is designed around: an event is one field of `ev`
//! (header, content type, last error and body in one string) and one member of `due`,
//! `inflight` or `dead`; a batch touches each key with one variadic command instead of
//! one command per event. Key order is fixed per script and documented above each one.

use std::sync::LazyLock;

/// The store format these scripts read and write (`whr:{R}:format`).
pub const FORMAT: u32 = 2;

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

/// What every script shares, defined once: server time, integers, fencing tokens, the
/// event record, the lease value, variadic commands, recovering expired leases.
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
-- One command over many arguments, in chunks Lua's unpack can take.
local function many(cmd, key, args)
  for i = 1, #args, 4000 do
    redis.call(cmd, key, unpack(args, i, math.min(i + 3999, #args)))
  end
end
-- The base of the next fencing tokens (the first token is base + 1): above every token
-- issued before (the counter, field `token` of the `fence` hash), and at least the server's
-- clock in microseconds, so tokens keep growing when Redis comes back from older data (a
-- restart from an older AOF/RDB, a failover to a lagging replica) that rolled the counter
-- back. Microseconds stay exact in Lua's doubles (below 2^53) until the year 2255.
local function token_base(fence, now_us)
  return math.max(tonumber(redis.call('HGET', fence, 'token') or '0'), now_us - 1)
end
-- The record of an event (a field of `ev`):
--   '<attempts> <receivedAt> <seenUntil> <lastAttemptAt> <lastStatus> <ctLen> <errLen>\n'
--   .. contentType .. lastError .. body
-- attempts: finished or abandoned attempts (the one in flight is in the lease);
-- seenUntil: end of the dedup window (0: none); lastAttemptAt, lastStatus: 0 for none.
-- A record that does not parse reads as all body, no attempts (as the Rust side reads it).
local function rec_head(r)
  local nl = string.find(r, '\n', 1, true)
  if nl then
    local a, recv, seen, lat, ls, ctl, el =
      string.match(string.sub(r, 1, nl - 1), '^(%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+)$')
    if a then
      return {a = tonumber(a), recv = recv, seen = tonumber(seen), lat = lat, ls = ls,
        ctl = tonumber(ctl), el = tonumber(el), nl = nl}
    end
  end
  return {a = 0, recv = '0', seen = 0, lat = '0', ls = '0', ctl = 0, el = 0, nl = 0}
end
local function rec_make(attempts, recv, seen, lat, ls, ct, err, body)
  return int(attempts) .. ' ' .. recv .. ' ' .. int(seen) .. ' ' .. lat .. ' ' .. ls .. ' '
    .. #ct .. ' ' .. #err .. '\n' .. ct .. err .. body
end
-- The record with new attempts and, when `err` is given, a new last outcome.
local function rec_update(r, attempts, lat, ls, err)
  local h = rec_head(r)
  local ct = string.sub(r, h.nl + 1, h.nl + h.ctl)
  if err == nil then
    lat, ls, err = h.lat, h.ls, string.sub(r, h.nl + h.ctl + 1, h.nl + h.ctl + h.el)
  end
  return rec_make(attempts, h.recv, h.seen, lat, ls, ct, err, string.sub(r, h.nl + h.ctl + h.el + 1))
end
-- The value of `lease[id]`: '<token> <attempt> <seenUntil>'.
local function lease_parse(v)
  if not v then return false, 0, 0 end
  local t, a, s = string.match(v, '^(%d+) (%d+) (%d+)$')
  if not t then return v, 0, 0 end
  return t, tonumber(a), tonumber(s)
end
-- Expired leases go back to due with their attempt counted, at most `limit` per call so
-- a script stays short.
local function recover(inflight, lease, due, ev, now, limit)
  local ids = redis.call('ZRANGEBYSCORE', inflight, '-inf', now, 'LIMIT', 0, limit)
  if #ids == 0 then return 0 end
  local holders = redis.call('HMGET', lease, unpack(ids))
  local back = {}
  for i, id in ipairs(ids) do
    local r = redis.call('HGET', ev, id)
    if r then
      local _, attempt = lease_parse(holders[i])
      if attempt > 0 then redis.call('HSET', ev, id, rec_update(r, attempt)) end
      back[#back + 1] = now
      back[#back + 1] = id
    end
  end
  redis.call('ZREM', inflight, unpack(ids))
  redis.call('HDEL', lease, unpack(ids))
  if #back > 0 then redis.call('ZADD', due, unpack(back)) end
  return #ids
end
-- Events leaving the store for good keep a dedup entry until their window ends.
local function remember(seen_args, seen_until, id, now)
  if seen_until > now then
    seen_args[#seen_args + 1] = seen_until
    seen_args[#seen_args + 1] = id
  end
end
"#;

fn script(body: &str) -> LuaScript {
    let source = format!("{PRELUDE}\n{body}");
    let hash = redis::Script::new(&source).get_hash().to_string();
    LuaScript { source, hash }
}

/// Moves one format-1 event (`body`, `meta`, `attempts` hashes; lease value a bare token)
/// into its format-2 record; returns the record, or false when format 1 has no such event.
/// Shared by the migration and by `CLAIM`, which meets events a format-1 relay still running
/// during an upgrade stored after the migration.
const FROM_V1: &str = r#"
local function from_v1(ev, lease, seen, v1body, v1meta, v1attempts, id)
  local body = redis.call('HGET', v1body, id)
  if not body then return false end
  local ok, m = pcall(cjson.decode, redis.call('HGET', v1meta, id) or '{}')
  if not ok or type(m) ~= 'table' then m = {} end
  local function num(x) if type(x) == 'number' then return int(x) end return '0' end
  local ct = type(m.contentType) == 'string' and m.contentType or ''
  local err = type(m.lastError) == 'string' and m.lastError or ''
  local attempts = tonumber(redis.call('HGET', v1attempts, id) or '0') or 0
  local seen_until = tonumber(redis.call('ZSCORE', seen, id) or '0')
  local held = redis.call('HGET', lease, id)
  if held and not string.find(held, ' ', 1, true) then
    -- In flight: format 1 counted the attempt at claim; format 2 keeps it in the lease.
    redis.call('HSET', lease, id, held .. ' ' .. int(attempts) .. ' ' .. int(seen_until))
    attempts = math.max(attempts - 1, 0)
  end
  local r = rec_make(attempts, num(m.receivedAt), seen_until, num(m.lastAttemptAt), num(m.lastStatus), ct, err, body)
  redis.call('HSET', ev, id, r)
  redis.call('HDEL', v1body, id)
  redis.call('HDEL', v1meta, id)
  redis.call('HDEL', v1attempts, id)
  return r
end
"#;

/// Per-key ordered delivery (`delivery.ordering`), on the keys of [`crate::keys::OrderKeys`]
/// plus `due` and `ev`, passed as a table `o = {okey, ord, ohead, owait, blocked, due, ev}`.
/// Each key has at most one *active* event (`ohead`): due, in flight, or dead under
/// `onDeadLetter: block`; its other events wait in `blocked` and are never in `due`, so a claim
/// (which takes the lowest-scored due events) is never held up by a key that waits. When the
/// active event leaves (delivered, deleted, trimmed, dead under `continue`), the first event of
/// the key in receive order becomes due now. Only events stored with a key take part.
const ORDER: &str = r#"
local function o_keys(okey, ord, ohead, owait, blocked, due, ev)
  return {okey = okey, ord = ord, ohead = ohead, owait = owait, blocked = blocked, due = due, ev = ev}
end
-- A key's prefix in `ord`: its length in 8 hex digits, then the key.
local function o_prefix(k) return string.format('%08x', #k) .. k end
-- A member of `ord`: prefix, sequence in 16 digits, id. Returns key, id, prefix, sequence.
local function o_parse(m)
  local n = tonumber(string.sub(m, 1, 8), 16)
  return string.sub(m, 9, 8 + n), string.sub(m, 25 + n), string.sub(m, 1, 8 + n), tonumber(string.sub(m, 9 + n, 24 + n))
end
local function o_waiting(o, k, d)
  if redis.call('HINCRBY', o.owait, k, d) <= 0 then redis.call('HDEL', o.owait, k) end
end
local function o_block(o, k, id, since)
  if redis.call('ZADD', o.blocked, since, id) == 1 then o_waiting(o, k, 1) end
end
-- When key `k` has no active event, its first event in receive order becomes active (due
-- now if it was waiting, or at its retry time if a replay had put it back to wait). Members
-- whose record is gone (an event acked by a relay that knows nothing of ordering, during a
-- rolling upgrade) are dropped on the way. Returns true when an event became active.
local function o_release(o, k, p, now)
  if redis.call('HEXISTS', o.ohead, k) == 1 then return false end
  for _ = 1, 100 do
    local m = redis.call('ZRANGE', o.ord, '[' .. p, '(' .. p .. '\255', 'BYLEX', 'LIMIT', 0, 1)[1]
    if not m then
      redis.call('HDEL', o.owait, k) -- nothing of the key is left to wait
      return false
    end
    local _, id = o_parse(m)
    local since = redis.call('ZSCORE', o.blocked, id)
    if since then
      redis.call('ZREM', o.blocked, id)
      o_waiting(o, k, -1)
    end
    if redis.call('HEXISTS', o.ev, id) == 1 then
      if since then redis.call('ZADD', o.due, math.max(now, tonumber(since)), id) end
      redis.call('HSET', o.ohead, k, id)
      return true
    end
    redis.call('ZREM', o.ord, m)
    redis.call('HDEL', o.okey, id)
  end
  return false
end
-- The active event of key `k`, or false. One whose record is gone (acked by a relay that
-- knows nothing of ordering, during a rolling upgrade) is dropped.
local function o_active(o, k)
  local a = redis.call('HGET', o.ohead, k)
  if a and redis.call('HEXISTS', o.ev, a) == 0 then
    redis.call('HDEL', o.ohead, k)
    local am = redis.call('HGET', o.okey, a)
    if am then redis.call('ZREM', o.ord, am); redis.call('HDEL', o.okey, a) end
    return false
  end
  return a or false
end
-- Event `id` (member `m`) leaves the order of its key: delivered or deleted (`forget`: its
-- `okey` entry goes too), or dead-lettered under `continue` (kept, so a replay finds its place).
local function o_leave(o, id, m, forget, now)
  local k, _, p = o_parse(m)
  redis.call('ZREM', o.ord, m)
  if forget then redis.call('HDEL', o.okey, id) end
  if redis.call('HGET', o.ohead, k) == id then
    redis.call('HDEL', o.ohead, k)
    -- Only a key with waiting events has one to release (the common case: none).
    if redis.call('HEXISTS', o.owait, k) == 1 then o_release(o, k, p, now) end
  elseif redis.call('ZREM', o.blocked, id) == 1 then
    o_waiting(o, k, -1)
  end
end
-- A replayed dead letter goes back into the order of its key at its place of receipt, which
-- is before every event of the key received after it. Returns true when it is due now (the key
-- had no active event, it is the active one (`block`), or the active event came after it and
-- was not in flight: that one waits again), false when it waits.
local function o_back(o, id, m, now)
  local k, _, p, seq = o_parse(m)
  redis.call('ZADD', o.ord, 0, m)
  local a = o_active(o, k)
  if not a or a == id then
    redis.call('HSET', o.ohead, k, id)
    return true
  end
  local am = redis.call('HGET', o.okey, a)
  local at = am and seq < select(4, o_parse(am)) and redis.call('ZSCORE', o.due, a)
  if at then
    -- Waits again, scored by its next attempt time: released no earlier than that.
    redis.call('ZREM', o.due, a)
    o_block(o, k, a, tonumber(at))
    redis.call('HSET', o.ohead, k, id)
    return true
  end
  o_block(o, k, id, now)
  return false
end
"#;

/// KEYS: format, ev, lease, seen, fence, v1 body, v1 meta, v1 attempts.
/// ARGV: max events. Returns {format, migrated}: the format found when it is not 1 (2, or a
/// newer one this version must not touch: nothing done), else migrates up to `max` events
/// and returns 2 once none is left (the format key is set then) or 1 while some are.
///
/// Idempotent and safe to run from several relays at once: each call is atomic and takes
/// whatever format-1 events are left. The first call turns `fence` into a hash, so a
/// format-1 relay still running stops at its claim's `GET fence` (WRONGTYPE) before it
/// takes anything.
pub static MIGRATE: LazyLock<LuaScript> = LazyLock::new(|| {
    script(&format!(
        "{FROM_V1}\n{}",
        r#"
local found = redis.call('GET', KEYS[1])
if found then return {tonumber(found) or -1, 0} end
if redis.call('TYPE', KEYS[5]).ok == 'string' then
  local last = redis.call('GET', KEYS[5])
  redis.call('DEL', KEYS[5])
  redis.call('HSET', KEYS[5], 'token', last)
end
local ids = redis.call('HRANDFIELD', KEYS[6], tonumber(ARGV[1]))
for _, id in ipairs(ids) do
  from_v1(KEYS[2], KEYS[3], KEYS[4], KEYS[6], KEYS[7], KEYS[8], id)
end
if redis.call('HLEN', KEYS[6]) > 0 then return {1, #ids} end
redis.call('DEL', KEYS[7], KEYS[8])
redis.call('SET', KEYS[1], '2')
return {2, #ids}
"#
    ))
});

/// KEYS: seen, due, ev, trace, wait, then the ordering keys okey, ord, ohead, owait,
/// blocked, oseq (see [`ORDER`]).
/// ARGV: dedup window ms, `1` when the caller waits for replicas next (a batch that stores
/// nothing then writes `wait`, so the `WAIT` covers the first write of its duplicates, made
/// perhaps by another connection: `WAIT` counts from the connection's last propagated write;
/// Redis 7.0 also moves it on for a script that wrote nothing, as seen here, but that is not
/// a documented promise), then (id, body, content type, trace context or '', ordering key or
/// '') per event.
/// Returns {now, s1, s2, ...}: per event 1 when stored (due now), 2 when stored waiting behind
/// the active event of its ordering key, 0 for a duplicate (seen within the window, still
/// stored, or earlier in the same batch).
pub static ENQUEUE: LazyLock<LuaScript> = LazyLock::new(|| {
    script(&format!(
        "{ORDER}\n{}",
        r#"
local now = now_ms()
local window = tonumber(ARGV[1])
local seen_until = 0
if window > 0 then seen_until = now + window end
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 64)
if #expired > 0 then redis.call('ZREM', KEYS[1], unpack(expired)) end
local out, due, traces = {now}, {}, {}
local recv = int(now)
local o = o_keys(KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[2], KEYS[3])
local seq, seq0 = nil, nil
for i = 3, #ARGV, 5 do
  local id = ARGV[i]
  local until_ms = redis.call('ZSCORE', KEYS[1], id)
  if (until_ms and tonumber(until_ms) > now)
    or redis.call('HSETNX', KEYS[3], id, rec_make(0, recv, seen_until, '0', '0', ARGV[i + 2], '', ARGV[i + 1])) == 0 then
    out[#out + 1] = 0
  else
    local k = ARGV[i + 4]
    local active = true
    if k ~= '' then
      if not seq then
        seq = tonumber(redis.call('GET', KEYS[11]) or '0')
        seq0 = seq
      end
      seq = seq + 1
      local m = o_prefix(k) .. string.format('%016.0f', seq) .. id
      redis.call('ZADD', o.ord, 0, m)
      redis.call('HSET', o.okey, id, m)
      local a = o_active(o, k)
      if not a and redis.call('HEXISTS', o.owait, k) == 1 then
        -- Events wait with none active (left so by a relay without ordering): first them.
        o_release(o, k, o_prefix(k), now)
        a = redis.call('HGET', o.ohead, k)
      end
      if not a then
        redis.call('HSET', o.ohead, k, id)
        a = id
      end
      active = a == id
      if not active then o_block(o, k, id, now) end
    end
    if active then
      due[#due + 1] = now
      due[#due + 1] = id
      out[#out + 1] = 1
    else
      out[#out + 1] = 2
    end
    if ARGV[i + 3] ~= '' then
      traces[#traces + 1] = id
      traces[#traces + 1] = ARGV[i + 3]
    end
  end
end
if #due > 0 then many('ZADD', KEYS[2], due) end
if #traces > 0 then many('HSET', KEYS[4], traces) end
if seq and seq > seq0 then redis.call('SET', KEYS[11], int(seq)) end
if #due == 0 and not seq and ARGV[2] == '1' then redis.call('SET', KEYS[5], recv) end
return out
"#
    ))
});

/// KEYS: due, inflight, lease, ev, fence, pending, claim record, v1 body, v1 meta,
/// v1 attempts, seen, dest, trace.
/// ARGV: max events, lease ms, then the gate (see [`GATE`]): rate per second (0: none),
/// burst, breaker on (`1`/`0`), probe lease ms.
/// Returns {now, next due score or false, next lease deadline or false, recovered, {{id, token,
/// attempt, scheduled, record, lease deadline, trace context or ''}, ...}, {held, wait ms,
/// circuit state, probe}}.
///
/// The claim record (`whr:{R}:claim:<claim id>`, a key per call with an id the caller made
/// up, expiring with the lease) makes a retried claim idempotent: when the reply of a claim
/// is lost (a timeout, a dropped connection) the caller sends the same call again, and
/// instead of claiming more it gets back the events the first call claimed and still holds,
/// so they are not stranded in flight for a whole lease.
pub static CLAIM: LazyLock<LuaScript> = LazyLock::new(|| {
    script(&format!(
        "{FROM_V1}\n{GATE}\n{}",
        r#"
local now, now_us = clock()
local lease_ms = tonumber(ARGV[2])
local out = {}
-- Each claimed event's trace context (`trace`), one HMGET for the batch.
local function with_traces()
  if #out == 0 then return end
  local ids = {}
  for i, e in ipairs(out) do ids[i] = e[1] end
  local t = redis.call('HMGET', KEYS[13], unpack(ids))
  for i, e in ipairs(out) do e[7] = t[i] or '' end
end
local function next_scores()
  local next_due = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2] or false
  local next_lease = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')[2] or false
  return next_due, next_lease
end
local prior = redis.call('GET', KEYS[7])
if prior then
  local first, n = string.match(prior, '^(%d+) (%d+)$')
  first, n = tonumber(first), tonumber(n)
  for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    local t, attempt = lease_parse(redis.call('HGET', KEYS[3], id))
    local token = tonumber(t) or 0
    if token >= first and token < first + n then
      local r = redis.call('HGET', KEYS[4], id)
      if r then out[#out + 1] = {id, token, attempt, now, r, redis.call('ZSCORE', KEYS[2], id)} end
    end
  end
  with_traces()
  local next_due, next_lease = next_scores()
  return {now, next_due, next_lease, 0, out, {'', 0, 'closed', 0}}
end
local recovered = recover(KEYS[2], KEYS[3], KEYS[1], KEYS[4], now, 100)
local g = gate_open(KEYS[12], now, tonumber(ARGV[1]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5] == '1')
if g.held then
  local next_due, next_lease = next_scores()
  return {now, next_due, next_lease, recovered, out, {g.held, g.wait, g.state, 0}}
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, g.max)
if #due > 0 then
  local ids, scheduled = {}, {}
  for i = 1, #due, 2 do
    ids[#ids + 1] = due[i]
    scheduled[#scheduled + 1] = due[i + 1]
  end
  redis.call('ZREM', KEYS[1], unpack(ids))
  local recs = redis.call('HMGET', KEYS[4], unpack(ids))
  local base = token_base(KEYS[5], now_us)
  local token = base
  local deadline = now + lease_ms
  local flying, leases, pending, gone = {}, {}, {}, {}
  for i, id in ipairs(ids) do
    local r = recs[i] or from_v1(KEYS[4], KEYS[3], KEYS[11], KEYS[8], KEYS[9], KEYS[10], id)
    if r then
      local h = rec_head(r)
      token = token + 1
      flying[#flying + 1] = deadline
      flying[#flying + 1] = id
      leases[#leases + 1] = id
      leases[#leases + 1] = int(token) .. ' ' .. int(h.a + 1) .. ' ' .. int(h.seen)
      pending[#pending + 1] = scheduled[i]
      pending[#pending + 1] = id
      out[#out + 1] = {id, token, h.a + 1, scheduled[i], r, deadline}
    else
      -- A due id without a record was deleted by hand; drop what is left of it.
      gone[#gone + 1] = id
    end
  end
  if #gone > 0 then redis.call('ZREM', KEYS[6], unpack(gone)) end
  if token > base then
    redis.call('ZADD', KEYS[2], unpack(flying))
    redis.call('HSET', KEYS[3], unpack(leases))
    redis.call('ZADD', KEYS[6], 'NX', unpack(pending))
    redis.call('HSET', KEYS[5], 'token', int(token))
    redis.call('SET', KEYS[7], int(base + 1) .. ' ' .. int(token - base), 'PX', lease_ms)
  end
end
local probe = gate_took(KEYS[12], g, now, #out, tonumber(ARGV[6]))
with_traces()
local next_due, next_lease = next_scores()
return {now, next_due, next_lease, recovered, out, {'', 0, g.state, probe}}
"#
    ))
});

/// The destination gate, in `dest` (a HASH; fields in `store/README.md`): what holds
/// attempts back before any event is claimed, so events waiting for it stay in `due` in
/// their order, and an attempt not made is not counted. In this order:
/// - `paused_until`: a 429 or 503 with `Retry-After` paused the whole destination;
/// - the circuit breaker (when on): `open` until `open_until`, then `half_open` with one
///   probe at a time (`probe_until`: the probe's lease, after which another may go);
/// - the rate limit (when `rate` > 0): a token bucket (`tokens` at `tokens_at`) refilled at
///   `rate` per second up to `burst`; a claim takes at most the whole tokens and spends one
///   per event it claimed.
///
/// `gate_open` returns {held = false or 'paused'|'open'|'probing'|'rate', wait = ms until it may
/// open, max = events the claim may take, state, probe, tokens}; `gate_took` spends what the claim
/// took and returns 1 if the claimed event is the half-open probe.
pub const GATE: &str = r#"
local function gate_open(dest, now, max, rate, burst, breaker)
  local d = redis.call('HMGET', dest, 'paused_until', 'state', 'open_until', 'probe_until', 'tokens', 'tokens_at')
  local g = {held = false, wait = 0, max = max, state = d[2] or 'closed', probe = false, rate = rate, burst = burst}
  local paused_until = tonumber(d[1] or '0') or 0
  if paused_until > now then
    g.held, g.wait = 'paused', paused_until - now
    return g
  end
  if breaker and g.state ~= 'closed' then
    local open_until = tonumber(d[3] or '0') or 0
    local probe_until = tonumber(d[4] or '0') or 0
    if g.state == 'open' and open_until > now then
      g.held, g.wait = 'open', open_until - now
      return g
    end
    if g.state == 'half_open' and probe_until > now then
      g.held, g.wait = 'probing', math.min(probe_until - now, 1000)
      return g
    end
    g.probe, g.max = true, 1
  end
  if rate > 0 then
    local tokens, at = tonumber(d[5] or ''), tonumber(d[6] or '')
    if not tokens or not at then
      tokens = burst
    else
      tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
    end
    if tokens < 1 then
      g.held, g.wait = 'rate', math.max(1, math.ceil((1 - tokens) * 1000 / rate))
      return g
    end
    g.tokens = tokens
    g.max = math.min(g.max, math.floor(tokens))
  end
  return g
end
local function gate_took(dest, g, now, n, probe_ms)
  if g.rate > 0 and n > 0 then
    redis.call('HSET', dest, 'tokens', string.format('%.6f', g.tokens - n), 'tokens_at', int(now))
  end
  if g.probe and n > 0 then
    redis.call('HSET', dest, 'state', 'half_open', 'probe_until', int(now + probe_ms))
    g.state = 'half_open'
    return 1
  end
  return 0
end
"#;

/// KEYS: dest. ARGV: outcome (`ok` or `fail`), probe (`1` if the attempt was the half-open
/// probe), breaker on (`1`/`0`), failure threshold, open for ms, pause ms (0: none).
/// Records one attempt's outcome in the destination gate (see [`GATE`]): a pause moves
/// `paused_until` later (never earlier); with the breaker on, a success closes it and a
/// failure counts, opening it at the threshold (from `closed`) or again (a failed probe).
/// Returns {state, consecutive failures, 1 if this call opened it}.
pub static GATE_RECORD: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        r#"
local now = now_ms()
local dest = KEYS[1]
local ok, probe, breaker = ARGV[1] == 'ok', ARGV[2] == '1', ARGV[3] == '1'
local threshold, open_ms, pause_ms = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local d = redis.call('HMGET', dest, 'state', 'failures', 'paused_until')
local state, failures = d[1] or 'closed', tonumber(d[2] or '0') or 0
if pause_ms > 0 and now + pause_ms > (tonumber(d[3] or '0') or 0) then
  redis.call('HSET', dest, 'paused_until', int(now + pause_ms))
end
if not breaker then return {state, failures, 0} end
if ok then
  if state ~= 'closed' or failures > 0 then
    redis.call('HSET', dest, 'state', 'closed', 'failures', 0, 'since', int(now))
    redis.call('HDEL', dest, 'open_until', 'probe_until')
  end
  return {'closed', 0, 0}
end
failures = failures + 1
if (state == 'closed' and failures >= threshold) or (state == 'half_open' and probe) then
  local fields = {'state', 'open', 'failures', failures, 'open_until', int(now + open_ms)}
  if state == 'closed' then
    fields[#fields + 1] = 'since'
    fields[#fields + 1] = int(now)
  end
  redis.call('HSET', dest, unpack(fields))
  redis.call('HDEL', dest, 'probe_until')
  return {'open', failures, 1}
end
redis.call('HSET', dest, 'failures', failures)
return {state, failures, 0}
"#,
    )
});

/// KEYS: dest. Returns {state, since, failures, open_until, paused_until, tokens, tokens_at, now}
/// (false for fields never written).
pub static GATE_READ: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        r#"
local d = redis.call('HMGET', KEYS[1], 'state', 'since', 'failures', 'open_until', 'paused_until', 'tokens', 'tokens_at')
d[#d + 1] = now_ms()
return d
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

/// KEYS: inflight, lease, ev, pending, seen, trace, okey, ord, ohead, owait, blocked, due.
/// ARGV: id1, token1, deadline1, id2, ... (deadline: see [`RETRIED`]). Returns one 1 (acked,
/// now or by the first call of a retry) or 0 (the token no longer holds the lease) per
/// event, so a worker can ack a batch in one call. An acked event of an ordering key
/// releases the next event of its key ([`ORDER`]).
pub static ACK: LazyLock<LuaScript> = LazyLock::new(|| {
    script(&format!(
        "{RETRIED}\n{ORDER}\n{}",
        r#"
local now = now_ms()
local ids = {}
for i = 1, #ARGV, 3 do ids[#ids + 1] = ARGV[i] end
local holders = redis.call('HMGET', KEYS[2], unpack(ids))
local out, gone, seen = {}, {}, {}
for k, id in ipairs(ids) do
  local token = ARGV[3 * k - 1]
  local holder, _, seen_until = lease_parse(holders[k])
  if holder == token then
    gone[#gone + 1] = id
    remember(seen, seen_until, id, now)
    out[#out + 1] = 1
  elseif first_call_ran(holder, token, tonumber(ARGV[3 * k]), now) and redis.call('HEXISTS', KEYS[3], id) == 0 then
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
if #gone > 0 then
  local o = o_keys(KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11], KEYS[12], KEYS[3])
  local members = redis.call('HMGET', o.okey, unpack(gone))
  for i, id in ipairs(gone) do
    if members[i] then o_leave(o, id, members[i], true, now) end
  end
  redis.call('ZREM', KEYS[1], unpack(gone))
  redis.call('HDEL', KEYS[2], unpack(gone))
  redis.call('HDEL', KEYS[3], unpack(gone))
  redis.call('ZREM', KEYS[4], unpack(gone))
  redis.call('HDEL', KEYS[6], unpack(gone))
end
if #seen > 0 then redis.call('ZADD', KEYS[5], unpack(seen)) end
return out
"#
    ))
});

/// KEYS: inflight, lease, due, ev, dead.
/// ARGV: id, token, delay ms, last attempt at, last status (0: none), last error, deadline
/// (see [`RETRIED`]). Returns the new due score, or false if the lease was lost.
pub static RESCHEDULE: LazyLock<LuaScript> = LazyLock::new(|| {
    script(&format!(
        "{RETRIED}\n{}",
        r#"
local id = ARGV[1]
local now = now_ms()
local holder, attempt = lease_parse(redis.call('HGET', KEYS[2], id))
if holder ~= ARGV[2] then
  if first_call_ran(holder, ARGV[2], tonumber(ARGV[7]), now) and redis.call('HEXISTS', KEYS[4], id) == 1
    and not redis.call('ZSCORE', KEYS[5], id) then
    return redis.call('ZSCORE', KEYS[3], id) or now
  end
  return false
end
local at = now + tonumber(ARGV[3])
redis.call('ZREM', KEYS[1], id)
redis.call('HDEL', KEYS[2], id)
redis.call('ZADD', KEYS[3], at, id)
local r = redis.call('HGET', KEYS[4], id)
if r then redis.call('HSET', KEYS[4], id, rec_update(r, attempt, ARGV[4], ARGV[5], ARGV[6])) end
return at
"#
    ))
});

/// Drops dead letters older than max age, then the oldest beyond max entries (bounded). A
/// dropped dead letter of an ordering key leaves its key's order (under `block` that releases
/// the key). Needs [`ORDER`].
const TRIM_DEAD: &str = r#"
local function drop(o, dead, trace, seen_args, id, now)
  redis.call('ZREM', dead, id)
  local r = redis.call('HGET', o.ev, id)
  if r then
    remember(seen_args, rec_head(r).seen, id, now)
    local m = redis.call('HGET', o.okey, id)
    if m then o_leave(o, id, m, true, now) end
    redis.call('HDEL', o.ev, id)
    redis.call('HDEL', trace, id)
  end
end
local function trim(o, dead, seen, trace, now, max_age, max_entries, limit)
  local n, seen_args = 0, {}
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', dead, '-inf', '(' .. (now - max_age), 'LIMIT', 0, limit)) do
    drop(o, dead, trace, seen_args, id, now); n = n + 1
  end
  local excess = redis.call('ZCARD', dead) - max_entries
  if excess > 0 then
    for _, id in ipairs(redis.call('ZRANGE', dead, 0, math.min(excess, limit) - 1)) do
      drop(o, dead, trace, seen_args, id, now); n = n + 1
    end
  end
  if #seen_args > 0 then many('ZADD', seen, seen_args) end
  return n
end
"#;

/// KEYS: inflight, lease, dead, ev, pending, seen, trace, okey, ord, ohead, owait, blocked, due.
/// ARGV: id, token, last attempt at, last status (0: none), last error, max age ms, max
/// entries, deadline (see [`RETRIED`]), on dead letter (`continue`: the next event of its
/// ordering key is released; `block`: the key waits for this one to be replayed or deleted).
/// Returns {1, trimmed} when dead-lettered (now or by the first call of a retry), {0, 0} if
/// the lease was lost.
pub static DEAD: LazyLock<LuaScript> = LazyLock::new(|| {
    script(&format!(
        "{RETRIED}\n{ORDER}\n{TRIM_DEAD}\n{}",
        r#"
local id = ARGV[1]
local now = now_ms()
local holder, attempt = lease_parse(redis.call('HGET', KEYS[2], id))
if holder ~= ARGV[2] then
  if first_call_ran(holder, ARGV[2], tonumber(ARGV[8]), now) and redis.call('ZSCORE', KEYS[3], id) then
    return {1, 0}
  end
  return {0, 0}
end
local o = o_keys(KEYS[8], KEYS[9], KEYS[10], KEYS[11], KEYS[12], KEYS[13], KEYS[4])
redis.call('ZREM', KEYS[1], id)
redis.call('HDEL', KEYS[2], id)
redis.call('ZREM', KEYS[5], id)
redis.call('ZADD', KEYS[3], now, id)
local r = redis.call('HGET', KEYS[4], id)
if r then redis.call('HSET', KEYS[4], id, rec_update(r, attempt, ARGV[3], ARGV[4], ARGV[5])) end
if ARGV[9] ~= 'block' then
  local m = redis.call('HGET', o.okey, id)
  if m then o_leave(o, id, m, false, now) end
end
return {1, trim(o, KEYS[3], KEYS[6], KEYS[7], now, tonumber(ARGV[6]), tonumber(ARGV[7]), 100)}
"#
    ))
});

/// KEYS: dead, ev, seen, trace, okey, ord, ohead, owait, blocked, due. ARGV: max age ms, max
/// entries. Returns how many were dropped.
pub static TRIM: LazyLock<LuaScript> = LazyLock::new(|| {
    script(&format!(
        "{ORDER}\n{TRIM_DEAD}\n{}",
        r#"
local o = o_keys(KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[2])
return trim(o, KEYS[1], KEYS[3], KEYS[4], now_ms(), tonumber(ARGV[1]), tonumber(ARGV[2]), 1000)
"#
    ))
});

/// KEYS: inflight, lease, due.
/// ARGV: id, token. Gives a claimed event back (due now) without counting the attempt: the
/// record keeps the attempts it had before the claim.
pub static RELEASE: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        r#"
local id = ARGV[1]
if lease_parse(redis.call('HGET', KEYS[2], id)) ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[1], id)
redis.call('HDEL', KEYS[2], id)
redis.call('ZADD', KEYS[3], now_ms(), id)
return 1
"#,
    )
});

/// KEYS: inflight, lease, due, ev. ARGV: max. Returns how many expired leases went back to due.
pub static RECOVER: LazyLock<LuaScript> =
    LazyLock::new(|| script("return recover(KEYS[1], KEYS[2], KEYS[3], KEYS[4], now_ms(), tonumber(ARGV[1]))"));

/// Stored events' attempts reset (they become due now: the caller adds them to `due`).
const REVIVE: &str = r#"
local function reset_attempts(ev, id)
  local r = redis.call('HGET', ev, id)
  if r and rec_head(r).a > 0 then redis.call('HSET', ev, id, rec_update(r, 0)) end
end
"#;

/// KEYS: due, dead, ev, inflight, okey, ord, ohead, owait, blocked.
/// ARGV: id. Makes a dead or due event due now with attempts reset; a dead letter of an
/// ordering key goes back to its place in its key's order ([`ORDER`]), due now or waiting.
/// Returns 'dead' or 'due' (its state before), 'dead_waiting' (a dead letter now waiting behind
/// its key's active event), 'inflight' or 'blocked' (refused: in flight, or waiting behind its
/// key's active event), or 'missing'.
pub static REPLAY: LazyLock<LuaScript> = LazyLock::new(|| {
    script(&format!(
        "{REVIVE}\n{ORDER}\n{}",
        r#"
local id = ARGV[1]
local now = now_ms()
if redis.call('ZSCORE', KEYS[2], id) then
  redis.call('ZREM', KEYS[2], id)
  reset_attempts(KEYS[3], id)
  local m = redis.call('HGET', KEYS[5], id)
  if m and not o_back(o_keys(KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[1], KEYS[3]), id, m, now) then
    return 'dead_waiting'
  end
  redis.call('ZADD', KEYS[1], now, id)
  return 'dead'
end
if redis.call('ZSCORE', KEYS[1], id) then
  redis.call('ZADD', KEYS[1], now, id)
  reset_attempts(KEYS[3], id)
  return 'due'
end
if redis.call('ZSCORE', KEYS[4], id) then return 'inflight' end
if redis.call('ZSCORE', KEYS[9], id) then return 'blocked' end
return 'missing'
"#
    ))
});

/// KEYS: due, dead, ev, pending, seen, trace, okey, ord, ohead, owait, blocked.
/// ARGV: action (`count`, `replay` or `delete`), ZSCAN cursor, batch, since ms (`-inf`: none),
/// until ms, status kind (`any`, `exact`, `class`, `none`), status value, error substring
/// (lower case; empty: any).
/// One step of an action on the dead letters a filter selects: `ZSCAN`s up to about `batch`
/// members of `dead` from the cursor, keeps those dead-lettered in [since, until] whose record
/// matches the last status (exact, its class, or no HTTP answer) and whose last error contains
/// the substring (case-insensitive), and counts them, replays them (due now, attempts reset,
/// as `replay`, an ordered one back to its place in its key's order) or deletes them (as
/// `delete`: the dedup entry stays; an ordered one leaves its key's order). `ZSCAN` guarantees that a
/// member present for the whole scan is seen, whatever moves meanwhile.
/// Returns {next cursor (`0`: done), scanned, matched}.
pub static FILTER_DEAD: LazyLock<LuaScript> = LazyLock::new(|| {
    script(&format!(
        "{REVIVE}\n{ORDER}\n{}",
        r#"
local now = now_ms()
local action = ARGV[1]
local since = ARGV[4] == '-inf' and -math.huge or tonumber(ARGV[4])
local until_ms = tonumber(ARGV[5])
local kind, want, needle = ARGV[6], tonumber(ARGV[7]), ARGV[8]
local function selected(r)
  local h = rec_head(r)
  local status = tonumber(h.ls) or 0
  if kind == 'exact' and status ~= want then return false end
  if kind == 'class' and (status == 0 or math.floor(status / 100) ~= want) then return false end
  if kind == 'none' and status ~= 0 then return false end
  if needle ~= '' then
    local at = h.nl + h.ctl + 1
    local err = string.lower(string.sub(r, at, at + h.el - 1))
    if not string.find(err, needle, 1, true) then return false end
  end
  return true
end
-- Without a status or error filter the record need not be read to select.
local reads = kind ~= 'any' or needle ~= ''
local page = redis.call('ZSCAN', KEYS[2], ARGV[2], 'COUNT', tonumber(ARGV[3]))
local items = page[2]
local ids = {}
for i = 1, #items, 2 do
  local score = tonumber(items[i + 1])
  if score >= since and score <= until_ms then
    if not reads then
      ids[#ids + 1] = items[i]
    else
      local r = redis.call('HGET', KEYS[3], items[i])
      if r and selected(r) then ids[#ids + 1] = items[i] end
    end
  end
end
local o = o_keys(KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11], KEYS[1], KEYS[3])
if #ids > 0 and action == 'replay' then
  many('ZREM', KEYS[2], ids)
  local due = {}
  local members = redis.call('HMGET', o.okey, unpack(ids))
  for i, id in ipairs(ids) do
    reset_attempts(KEYS[3], id)
    if not members[i] then
      due[#due + 1] = now
      due[#due + 1] = id
    elseif o_back(o, id, members[i], now) then
      -- In `due` before the next of the step: a dead letter of the same key received
      -- earlier, later in the scan, must find it there to go ahead of it.
      redis.call('ZADD', KEYS[1], now, id)
    end
  end
  if #due > 0 then many('ZADD', KEYS[1], due) end
elseif #ids > 0 and action == 'delete' then
  many('ZREM', KEYS[2], ids)
  local members = redis.call('HMGET', o.okey, unpack(ids))
  for i, id in ipairs(ids) do
    if members[i] then o_leave(o, id, members[i], true, now) end
  end
  many('ZREM', KEYS[1], ids)
  many('ZREM', KEYS[4], ids)
  local seen = {}
  local recs = redis.call('HMGET', KEYS[3], unpack(ids))
  for i, id in ipairs(ids) do remember(seen, rec_head(recs[i] or '').seen, id, now) end
  if #seen > 0 then many('ZADD', KEYS[5], seen) end
  many('HDEL', KEYS[3], ids)
  many('HDEL', KEYS[6], ids)
end
return {page[1], #items / 2, #ids}
"#
    ))
});

/// KEYS: due, dead, inflight, ev, pending, seen, trace, okey, ord, ohead, owait, blocked.
/// ARGV: id. Drops every trace of the event except its dedup entry (an event of an ordering
/// key leaves its key's order: deleting the active one releases the next). Returns 1 if it
/// existed, 0 if not, and -1 (nothing done) for an event in flight: its lease holder alone may
/// end that state (outcome retries rely on it, see [`RETRIED`]).
pub static DELETE: LazyLock<LuaScript> = LazyLock::new(|| {
    script(&format!(
        "{ORDER}\n{}",
        r#"
local id = ARGV[1]
if redis.call('ZSCORE', KEYS[3], id) then return -1 end
local m = redis.call('HGET', KEYS[8], id)
if m then o_leave(o_keys(KEYS[8], KEYS[9], KEYS[10], KEYS[11], KEYS[12], KEYS[1], KEYS[4]), id, m, true, now_ms()) end
local r = redis.call('HGET', KEYS[4], id)
redis.call('ZREM', KEYS[1], id)
redis.call('ZREM', KEYS[2], id)
redis.call('ZREM', KEYS[5], id)
if not r then return 0 end
local seen = {}
remember(seen, rec_head(r).seen, id, now_ms())
if #seen > 0 then redis.call('ZADD', KEYS[6], unpack(seen)) end
redis.call('HDEL', KEYS[4], id)
redis.call('HDEL', KEYS[7], id)
return 1
"#
    ))
});

/// KEYS: due, inflight, dead, pending, blocked, owait, okey.
/// Returns {due, inflight, dead, oldest undelivered score or false, now, blocked, keys
/// waiting, key of the oldest waiting event or false, when it began waiting or false}. The
/// oldest undelivered event is the lowest of `pending` (events attempted at least once since
/// they became undelivered, scored by when that was), of `due` (where a never-attempted event
/// is scored by when it was received or replayed) and of `blocked`.
pub static STATS: LazyLock<LuaScript> = LazyLock::new(|| {
    script(&format!(
        "{ORDER}\n{}",
        r#"
local oldest = false
local waiter, waiter_key = false, false
for i, key in ipairs({KEYS[4], KEYS[1], KEYS[5]}) do
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if first[2] then
    local s = tonumber(first[2])
    if not oldest or s < oldest then oldest = s end
    if i == 3 then
      waiter = int(s)
      local m = redis.call('HGET', KEYS[7], first[1])
      if m then waiter_key = o_parse(m) end
    end
  end
end
if oldest then oldest = int(oldest) end
return {redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2]), redis.call('ZCARD', KEYS[3]), oldest, now_ms(),
  redis.call('ZCARD', KEYS[5]), redis.call('HLEN', KEYS[6]), waiter_key, waiter}
"#
    ))
});

/// KEYS: due, inflight, dead, ev, lease, trace, blocked, okey.
/// ARGV: id. Returns {state, score, attempts, record, trace context or '', ordering key or ''}
/// or false when unknown; attempts of an event in flight count the attempt under way.
pub static GET: LazyLock<LuaScript> = LazyLock::new(|| {
    script(&format!(
        "{ORDER}\n{}",
        r#"
local id = ARGV[1]
local r = redis.call('HGET', KEYS[4], id)
if not r then return false end
local state, score = 'unknown', '0'
for i, name in ipairs({'due', 'inflight', 'dead', 'blocked'}) do
  local s = redis.call('ZSCORE', KEYS[i == 4 and 7 or i], id)
  if s then state, score = name, s; break end
end
local attempts = rec_head(r).a
if state == 'inflight' then
  local _, a = lease_parse(redis.call('HGET', KEYS[5], id))
  attempts = a
end
local m = redis.call('HGET', KEYS[8], id)
return {state, score, attempts, r, redis.call('HGET', KEYS[6], id) or '', m and o_parse(m) or ''}
"#
    ))
});

/// KEYS: okey, ord, ohead, owait, blocked, due, ev, dead.
/// ARGV: HSCAN cursor of `owait`, count, on dead letter (`continue` or `block`).
/// Repairs the order of the keys that have waiting events, about `count` of them a call: a key
/// whose active event is gone (acked or deleted by a relay that knows nothing of ordering,
/// during a rolling upgrade) or, under `continue`, dead (dead-lettered by such a relay) gets
/// its next event released. Returns {next cursor (`0`: done), keys repaired}.
pub static ORDER_HEAL: LazyLock<LuaScript> = LazyLock::new(|| {
    script(&format!(
        "{ORDER}\n{}",
        r#"
local now = now_ms()
local o = o_keys(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7])
local page = redis.call('HSCAN', o.owait, ARGV[1], 'COUNT', tonumber(ARGV[2]))
local repaired = 0
for i = 1, #page[2], 2 do
  local k = page[2][i]
  local a = o_active(o, k)
  if a and ARGV[3] ~= 'block' and redis.call('ZSCORE', KEYS[8], a) then
    local m = redis.call('HGET', o.okey, a)
    if m then o_leave(o, a, m, false, now) end
    repaired = repaired + 1
  elseif not a and o_release(o, k, o_prefix(k), now) then
    repaired = repaired + 1
  end
end
return {page[1], repaired}
"#
    ))
});

/// KEYS: the state's set (due, inflight or dead), ev, lease.
/// ARGV: limit, cursor score ('' for the start), cursor id, most record bytes to read, '1'
/// when the set is `inflight` (attempts then come from the lease), '1' for newest first.
/// Returns {full, rows}: up to `limit` rows {id, score, attempts, record without its body},
/// oldest first (or newest first), strictly after the cursor in that order of the set (score,
/// then id byte by byte): a position, not an offset, so members that stay in the set are never skipped or
/// repeated while others move. `full` is 1 when the page stopped early because the records
/// read reached the byte bound (a page of large bodies); the next page goes on after it.
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
local set, limit, budget = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[4])
local newest_first = ARGV[6] == '1'
-- The rank of the first member after the cursor (oldest first), or of the first member not
-- before it (newest first: the page ends just before that rank).
local function cursor_rank(score, after)
  -- Members scored exactly `score` hold ranks [lo, hi) in byte order.
  local lo = redis.call('ZCOUNT', set, '-inf', '(' .. score)
  local hi = lo + redis.call('ZCOUNT', set, score, score)
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local m = redis.call('ZRANGE', set, mid, mid)[1]
    if bytes_after(m, after) or (newest_first and m == after) then hi = mid else lo = mid + 1 end
  end
  return lo
end
local page, order = {}, {}
if not newest_first then
  local start = 0
  if ARGV[2] ~= '' then start = cursor_rank(ARGV[2], ARGV[3]) end
  page = redis.call('ZRANGE', set, start, start + limit - 1, 'WITHSCORES')
  for i = 1, #page, 2 do order[#order + 1] = i end
else
  local stop = redis.call('ZCARD', set) - 1
  if ARGV[2] ~= '' then stop = cursor_rank(ARGV[2], ARGV[3]) - 1 end
  if stop >= 0 then
    page = redis.call('ZRANGE', set, math.max(0, stop - limit + 1), stop, 'WITHSCORES')
    for i = #page - 1, 1, -2 do order[#order + 1] = i end
  end
end
local out, read = {}, 0
for n, i in ipairs(order) do
  local id = page[i]
  local r = redis.call('HGET', KEYS[2], id) or ''
  read = read + #r
  local h = rec_head(r)
  local attempts = h.a
  if ARGV[5] == '1' then
    local _, a = lease_parse(redis.call('HGET', KEYS[3], id))
    attempts = a
  end
  out[#out + 1] = {id, page[i + 1], attempts, string.sub(r, 1, h.nl + h.ctl + h.el)}
  if read >= budget and n < #order then return {1, out} end
end
return {0, out}
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
