-- SyncKairos engine: shared part of every command script.
-- The Rust reference model (core/src/model.rs) is the spec of this file; the
-- differential property tests hold the two equal. Redis 6.2 semantics only.
--
-- KEYS: 1 state  2 shard deadlines ZSET  3 shard audit stream
--       4 idempotency key  5 switch rate-limit key   (all in one hash slot)
-- ARGV: 1 now_ms ('' = Redis TIME; tests only)  2 session_id  3 channel
--       4 expected_version ('' = any)  5 actor ('' = unknown)
--       6 idempotency ('1' = KEYS[4] is a real key)  7 idempotency TTL s
--       8 base state TTL s  9 switch limit per second (0 = off)
--       10 payload (create: spec JSON; switch: next participant id)
--       11 metadata JSON text (create only; '' = none)

local floor, max, fmt, concat = math.floor, math.max, string.format, table.concat
local NULL = cjson.null

local function nn(v)
  if v == NULL then return nil end
  return v
end

-- time ---------------------------------------------------------------------

local function now_ms()
  if ARGV[1] ~= '' then return tonumber(ARGV[1]) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + floor(tonumber(t[2]) / 1000)
end

-- One-entry memo: a call formats `now` for several fields.
local iso_ms, iso_text

local function iso(ms)
  if ms == iso_ms then return iso_text end
  local z = floor(ms / 86400000)
  local rem = ms - z * 86400000
  z = z + 719468
  local era = floor(z / 146097)
  local doe = z - era * 146097
  local yoe = floor((doe - floor(doe / 1460) + floor(doe / 36524) - floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100))
  local mp = floor((5 * doy + 2) / 153)
  local d = doy - floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  iso_ms = ms
  iso_text = fmt('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', y, m, d,
    floor(rem / 3600000), floor(rem / 60000) % 60, floor(rem / 1000) % 60, rem % 1000)
  return iso_text
end

local function parse_iso(s)
  s = nn(s)
  if s == nil then return nil end
  local y, m, d = tonumber(s:sub(1, 4)), tonumber(s:sub(6, 7)), tonumber(s:sub(9, 10))
  local ms = tonumber(s:sub(12, 13)) * 3600000 + tonumber(s:sub(15, 16)) * 60000
    + tonumber(s:sub(18, 19)) * 1000 + tonumber(s:sub(21, 23))
  if m <= 2 then y = y - 1 end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local doy = floor((153 * (m > 2 and m - 3 or m + 9) + 2) / 5) + d - 1
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  return (era * 146097 + doe - 719468) * 86400000 + ms
end

-- state JSON (key order of API.md §2; metadata kept verbatim) --------------

local META, STM = ',"metadata":', ',"server_time_ms":'

local function decode_state(raw)
  local meta
  local a = string.find(raw, META, 1, true)
  if a then
    -- our ',"server_time_ms":' is the last one; metadata may hold another
    local b, pos = nil, max(1, #raw - 256)
    while true do
      local f = string.find(raw, STM, pos, true)
      if not f then break end
      b, pos = f, f + 1
    end
    meta = raw:sub(a + #META, b - 1)
    raw = raw:sub(1, a - 1) .. raw:sub(b)
  end
  local st = cjson.decode(raw)
  st.metadata = meta
  st.active_participant_id = nn(st.active_participant_id)
  st.time_per_cycle_ms = nn(st.time_per_cycle_ms)
  st.max_time_ms = nn(st.max_time_ms)
  -- Only cycle_started_at is computed with; the other timestamps are carried
  -- as their ISO text (a timestamp is epoch ms or ISO text, see ts()).
  st.cycle_started_at = parse_iso(st.cycle_started_at)
  st.session_started_at = nn(st.session_started_at)
  st.session_completed_at = nn(st.session_completed_at)
  st.expires_at = nil
  st.cycle_expiry = nn(st.cycle_expiry)
  for _, p in ipairs(st.participants) do p.group_id = nn(p.group_id) end
  return st
end

local function int(n) return fmt('%d', n) end
local function opt_int(n) if n == nil then return 'null' end return fmt('%d', n) end
local function ts(v)
  if v == nil then return 'null' end
  if type(v) == 'string' then return '"' .. v .. '"' end
  return '"' .. iso(v) .. '"'
end
local function opt_str(s) if s == nil then return 'null' end return '"' .. s .. '"' end
local function bool(b) if b then return 'true' end return 'false' end

local function encode_state(st)
  local ps = {}
  for i, p in ipairs(st.participants) do
    ps[i] = '{"participant_id":"' .. p.participant_id
      .. '","participant_index":' .. int(p.participant_index)
      .. ',"total_time_ms":' .. int(p.total_time_ms)
      .. ',"time_used_ms":' .. int(p.time_used_ms)
      .. ',"time_remaining_ms":' .. int(p.time_remaining_ms)
      .. ',"cycle_count":' .. int(p.cycle_count)
      .. ',"is_active":' .. bool(p.is_active)
      .. ',"has_expired":' .. bool(p.has_expired)
      .. (p.group_id and (',"group_id":"' .. p.group_id .. '"') or '') .. '}'
  end
  local out = {
    '{"session_id":"', st.session_id, '","sync_mode":"', st.sync_mode,
    '","status":"', st.status, '","version":', int(st.version),
    ',"participants":[', concat(ps, ','),
    '],"active_participant_id":', opt_str(st.active_participant_id),
    ',"total_time_ms":', int(st.total_time_ms),
    ',"time_per_cycle_ms":', opt_int(st.time_per_cycle_ms),
    ',"cycle_started_at":', ts(st.cycle_started_at),
    ',"session_started_at":', ts(st.session_started_at),
    ',"session_completed_at":', ts(st.session_completed_at),
    ',"increment_ms":', int(st.increment_ms),
  }
  if st.max_time_ms then out[#out + 1] = ',"max_time_ms":' .. int(st.max_time_ms) end
  out[#out + 1] = ',"created_at":' .. ts(st.created_at) .. ',"updated_at":' .. ts(st.updated_at)
  if st.metadata then out[#out + 1] = META .. st.metadata end
  out[#out + 1] = STM .. int(st.server_time_ms) .. ',"expires_at":' .. ts(st.expires_at)
  if st.cycle_expiry then out[#out + 1] = ',"cycle_expiry":"' .. st.cycle_expiry .. '"' end
  out[#out + 1] = '}'
  return concat(out)
end

-- the model (mirrors core/src/model.rs and core/src/view.rs) ---------------

local function has_bank(st) return st.sync_mode ~= 'count_up' or st.max_time_ms ~= nil end
local function gkey(p) return p.group_id or p.participant_id end

local function sharers(st, i)
  local m, r = st.sync_mode, {}
  if m == 'per_participant' or m == 'per_cycle' then return { i } end
  if m == 'per_group' then
    local g = gkey(st.participants[i])
    for j, p in ipairs(st.participants) do if gkey(p) == g then r[#r + 1] = j end end
  else
    for j = 1, #st.participants do r[j] = j end
  end
  return r
end

local function index_of(st, id)
  if id == nil then return nil end
  for j, p in ipairs(st.participants) do if p.participant_id == id then return j end end
  return nil
end

local function active_index(st) return index_of(st, st.active_participant_id) end

local function deadline(st)
  if st.status ~= 'running' or not has_bank(st) then return nil end
  local i = active_index(st)
  if not i or not st.cycle_started_at then return nil end
  return st.cycle_started_at + st.participants[i].time_remaining_ms
end

local function set_bank(st, i, bank)
  for _, j in ipairs(sharers(st, i)) do
    local p = st.participants[j]
    p.total_time_ms, p.time_remaining_ms = bank, bank
  end
end

local function charge(st, i, elapsed)
  local p = st.participants[i]
  p.time_used_ms = p.time_used_ms + elapsed
  if has_bank(st) then set_bank(st, i, p.time_remaining_ms - elapsed) end
end

local function set_active(st, i)
  for j, p in ipairs(st.participants) do p.is_active = (j == i) end
  st.active_participant_id = i and st.participants[i].participant_id or nil
end

local function finish_as(st, status, at)
  set_active(st, nil)
  st.status, st.cycle_started_at, st.session_completed_at = status, nil, at
end

local function bump(st, now)
  st.version = st.version + 1
  st.updated_at, st.server_time_ms = now, now
  st.expires_at = deadline(st)
end

local function cycle_ms(st) return st.time_per_cycle_ms or st.total_time_ms end

local function auto_advance(st, i, d1, now)
  local n, c = #st.participants, cycle_ms(st)
  local k = 1 + floor((now - d1) / c)
  local first_turn = st.participants[i].time_remaining_ms
  for j = 1, n do
    local d = (j - i) % n
    if d < k then
      local turns = floor((k - 1 - d) / n) + 1
      local p = st.participants[j]
      p.time_used_ms = p.time_used_ms + turns * c
      p.cycle_count = p.cycle_count + turns
      p.has_expired = true
    end
  end
  st.participants[i].time_used_ms = st.participants[i].time_used_ms - (c - first_turn)
  for _, p in ipairs(st.participants) do p.total_time_ms, p.time_remaining_ms = c, c end
  set_active(st, (i - 1 + k) % n + 1)
  st.cycle_started_at = d1 + (k - 1) * c
end

local function settle(st, now)
  local d = deadline(st)
  if d == nil or now < d then return nil end
  local i = active_index(st)
  local pid = st.participants[i].participant_id
  if st.sync_mode == 'per_cycle' and st.cycle_expiry == 'auto_advance' then
    auto_advance(st, i, d, now)
    return 'cycle_expired', pid
  end
  charge(st, i, st.participants[i].time_remaining_ms)
  st.participants[i].has_expired = true
  finish_as(st, 'expired', d)
  return 'session_expired', pid
end

local function refuse(st, action)
  return '"kind":"error","code":"INVALID_STATE_TRANSITION","action":"' .. action
    .. '","status":"' .. st.status .. '"'
end

local function rotation(st, i)
  local n = #st.participants
  if st.sync_mode ~= 'per_group' then return i % n + 1 end
  local groups, pos = {}, {}
  for j = 1, n do
    local g = gkey(st.participants[j])
    if not pos[g] then groups[#groups + 1] = g; pos[g] = #groups end
  end
  local nextg = groups[pos[gkey(st.participants[i])] % #groups + 1]
  local best
  for j = 1, n do
    local p = st.participants[j]
    if gkey(p) == nextg and (best == nil or p.cycle_count < st.participants[best].cycle_count) then
      best = j
    end
  end
  return best or i
end

local function running_turn(st, now)
  return active_index(st), max(0, now - st.cycle_started_at)
end

local cmds = {}

function cmds.start(st, now)
  if st.status ~= 'pending' then return nil, refuse(st, 'start') end
  set_active(st, 1)
  st.status, st.cycle_started_at, st.session_started_at = 'running', now, now
  return 'session_started'
end

function cmds.switch(st, now)
  if st.status ~= 'running' then return nil, refuse(st, 'switch') end
  local named
  if ARGV[10] ~= '' then
    named = index_of(st, string.lower(ARGV[10]))
    if not named then
      return nil, '"kind":"error","code":"PARTICIPANT_NOT_FOUND","participant_id":' .. cjson.encode(ARGV[10])
    end
  end
  local i, elapsed = running_turn(st, now)
  charge(st, i, elapsed)
  local mode = st.sync_mode
  if st.increment_ms > 0 and (mode == 'per_participant' or mode == 'per_group') then
    set_bank(st, i, st.participants[i].time_remaining_ms + st.increment_ms)
  end
  st.participants[i].cycle_count = st.participants[i].cycle_count + 1
  local target = named or rotation(st, i)
  if mode == 'per_cycle' then
    set_bank(st, i, cycle_ms(st))
    set_bank(st, target, cycle_ms(st))
  end
  set_active(st, target)
  st.cycle_started_at = now
  return 'participant_switched'
end

function cmds.pause(st, now)
  if st.status ~= 'running' then return nil, refuse(st, 'pause') end
  charge(st, running_turn(st, now))
  st.status, st.cycle_started_at = 'paused', nil
  return 'session_paused'
end

function cmds.resume(st, now)
  if st.status ~= 'paused' then return nil, refuse(st, 'resume') end
  st.status, st.cycle_started_at = 'running', now
  return 'session_resumed'
end

local function finish(st, now, action, status, event)
  local s = st.status
  if s == 'expired' or s == 'completed' or s == 'cancelled' then return nil, refuse(st, action) end
  if s == 'running' then charge(st, running_turn(st, now)) end
  finish_as(st, status, now)
  return event
end

function cmds.complete(st, now) return finish(st, now, 'complete', 'completed', 'session_completed') end
function cmds.cancel(st, now) return finish(st, now, 'cancel', 'cancelled', 'session_cancelled') end

-- create -------------------------------------------------------------------

local function initial_state(now)
  local spec = cjson.decode(ARGV[10])
  local mode = spec.sync_mode
  local ps = {}
  for i, s in ipairs(spec.participants) do
    ps[i] = {
      participant_id = s.participant_id, participant_index = s.participant_index,
      total_time_ms = s.total_time_ms, time_used_ms = 0, time_remaining_ms = s.total_time_ms,
      cycle_count = 0, is_active = false, has_expired = false, group_id = nn(s.group_id),
    }
  end
  local tpc, maxt = nn(spec.time_per_cycle_ms), nn(spec.max_time_ms)
  for i, p in ipairs(ps) do
    local bank = p.total_time_ms
    if mode == 'per_cycle' then
      bank = tpc or spec.total_time_ms
    elseif mode == 'per_group' then
      for _, q in ipairs(ps) do
        if gkey(q) == gkey(p) then bank = q.total_time_ms; break end
      end
    elseif mode == 'global' then
      bank = spec.total_time_ms
    elseif mode == 'count_up' and maxt then
      bank = maxt
    end
    ps[i].bank = bank
  end
  for _, p in ipairs(ps) do p.total_time_ms, p.time_remaining_ms, p.bank = p.bank, p.bank, nil end
  return {
    session_id = spec.session_id, sync_mode = mode, status = 'pending', version = 1,
    participants = ps, total_time_ms = spec.total_time_ms, time_per_cycle_ms = tpc,
    increment_ms = spec.increment_ms or 0, max_time_ms = maxt,
    created_at = now, updated_at = now, server_time_ms = now,
    metadata = ARGV[11] ~= '' and ARGV[11] or nil, cycle_expiry = nn(spec.cycle_expiry),
  }
end

-- effects ------------------------------------------------------------------

local function xadd(ev)
  if ARGV[5] ~= '' then
    redis.call('XADD', KEYS[3], '*', 'type', ev[1], 'sid', ARGV[2], 'v', int(ev[2]),
      'at', ev[3], 'actor', ARGV[5], 'snap', ev[4])
  else
    redis.call('XADD', KEYS[3], '*', 'type', ev[1], 'sid', ARGV[2], 'v', int(ev[2]),
      'at', ev[3], 'snap', ev[4])
  end
end

-- Writes the final state, its deadline and TTL, publishes it, appends events.
local function persist(st, now, events)
  local json = events[#events][4]
  local base = tonumber(ARGV[8]) * 1000
  local d = st.expires_at
  if d then
    redis.call('SET', KEYS[1], json, 'PX', max(base, d - now + base))
    redis.call('ZADD', KEYS[2], d, ARGV[2])
  else
    redis.call('SET', KEYS[1], json, 'PX', base)
    redis.call('ZREM', KEYS[2], ARGV[2])
  end
  redis.call('PUBLISH', ARGV[3], json)
  for _, ev in ipairs(events) do xadd(ev) end
end

local function event(events, st, t, now)
  bump(st, now)
  events[#events + 1] = { t, st.version, int(now), encode_state(st) }
end

local function state_reply(json, expired)
  return '"kind":"state","expired_participant_id":' .. (expired and cjson.encode(expired) or 'null')
    .. ',"state":' .. json
end

-- Returns the reply body (without braces), whether it is a success, and the
-- rate-limit part, if any.
local function dispatch(cmd, now)
  local sid = ARGV[2]
  local raw = redis.call('GET', KEYS[1])
  if cmd == 'create' then
    if raw then return '"kind":"error","code":"SESSION_EXISTS"', false end
    local st = initial_state(now)
    local json = encode_state(st)
    persist(st, now, { { 'session_created', 1, int(now), json } })
    return state_reply(json, nil), true
  end
  if cmd == 'delete' then
    if not raw then return '"kind":"deleted","existed":false', true end
    local st = decode_state(raw)
    redis.call('DEL', KEYS[1], KEYS[5])
    redis.call('ZREM', KEYS[2], sid)
    redis.call('PUBLISH', ARGV[3], '{"type":"SESSION_DELETED","session_id":"' .. sid
      .. '","version":' .. int(st.version + 1) .. ',"server_time_ms":' .. int(now) .. '}')
    xadd({ 'session_deleted', st.version + 1, int(now), raw })
    return '"kind":"deleted","existed":true', true
  end
  if not raw then
    if cmd == 'expire' then redis.call('ZREM', KEYS[2], sid) end
    return '"kind":"error","code":"SESSION_NOT_FOUND"', false
  end
  local st = decode_state(raw)
  if ARGV[4] ~= '' and tonumber(ARGV[4]) ~= st.version then
    return '"kind":"error","code":"CONFLICT","expected_version":' .. ARGV[4]
      .. ',"actual_version":' .. int(st.version), false
  end
  local rate
  local limit = tonumber(ARGV[9])
  if cmd == 'switch' and limit > 0 then
    local window, count = floor(now / 1000), 1
    local cur = redis.call('GET', KEYS[5])
    if cur then
      local w, c = string.match(cur, '^(%-?%d+):(%d+)$')
      if w and tonumber(w) == window then count = tonumber(c) + 1 end
    end
    redis.call('SET', KEYS[5], int(window) .. ':' .. int(count), 'PX', ARGV[1] ~= '' and 600000 or 2000)
    local reset = floor(((window + 1) * 1000 - now + 999) / 1000)
    rate = '{"limit":' .. int(limit) .. ',"remaining":' .. int(max(0, limit - count))
      .. ',"reset_seconds":' .. int(reset) .. '}'
    if count > limit then
      return '"kind":"error","code":"RATE_LIMIT_EXCEEDED","retry_after_seconds":' .. int(reset), false, rate
    end
  end

  local events = {}
  local settled, expired = settle(st, now)
  if settled then event(events, st, settled, now) end
  local t, err
  if cmd == 'expire' or cmd == 'switch' and settled then
    if not settled then
      local d = deadline(st)
      if d then redis.call('ZADD', KEYS[2], d, sid) else redis.call('ZREM', KEYS[2], sid) end
      return '"kind":"not_due","status":"' .. st.status .. '","deadline_ms":' .. opt_int(d), true
    end
  else
    t, err = cmds[cmd](st, now)
    if t then event(events, st, t, now) end
  end
  if #events > 0 then persist(st, now, events) end
  if err then return err, false, rate end
  return state_reply(events[#events][4], expired), true, rate
end

local function run(cmd)
  local now = now_ms()
  local idem = ARGV[6] ~= ''
  if idem then
    local prev = redis.call('GET', KEYS[4])
    if prev then
      local sep = string.find(prev, '|', 1, true)
      if prev:sub(1, sep - 1) ~= cmd then
        return '{"replayed":false,"kind":"error","code":"IDEMPOTENCY_KEY_REUSED"}'
      end
      return '{"replayed":true' .. prev:sub(sep + 18)
    end
  end
  local body, ok, rate = dispatch(cmd, now)
  local reply = '{"replayed":false' .. (rate and (',"rate":' .. rate) or '') .. ',' .. body .. '}'
  if idem and ok then redis.call('SET', KEYS[4], cmd .. '|' .. reply, 'EX', ARGV[7]) end
  return reply
end
