-- SyncKairos engine: shared part of every command script.
-- The Rust reference model (core/src/model.rs) is the spec of this file; the
-- differential property tests hold the two equal. Redis 6.2 semantics only.
-- Sessions are stored, published and audited as compact records
-- (core/src/record.rs), never as JSON: Redis's Lua spends most of its time in
-- JSON, so the API JSON is rendered in Rust by the readers.
--
-- KEYS: 1 state  2 shard deadlines ZSET  3 shard audit stream
--       4 the session's idempotency HASH  5 switch rate-limit key
--       6 tombstone of a deleted session   7 the session's push devices HASH
--       (all in one hash slot)
-- ARGV: 1 now_ms ('' = Redis TIME; tests only)  2 session_id  3 channel
--       4 expected_version ('' = any)  5 actor ('' = unknown)
--       6 Idempotency-Key ('' = none)  7 idempotency TTL s
--       8 base state TTL s  9 switch limit per second (0 = off)
--       10 payload (create: spec JSON; switch: next participant id)
--       11 metadata JSON text (create only; '' = none)
--       12 only if active ('1' = refuse unless the actor is the active participant)
--       13 auto-advance idle cycles (0 = never stop)  14 idle TTL s
--       15 tombstone TTL s  16 idempotency keys kept per session
--       17 wake channel  18 shard  19 switch: the lag the mover claims, ms ('' = none)
-- Reply: { header JSON [, record] }.
--
-- The deadline ZSET holds each live session at its wake time: its clock's
-- deadline, or its idle end. A write that puts a session before the shard's
-- earliest entry publishes '<shard>:<ms>:<session_id>' on the wake channel, so the one
-- scheduler that owns expiry can sleep until the earliest wake time.

local floor, max, concat = math.floor, math.max, table.concat

local function now_ms()
  if ARGV[1] ~= '' then return tonumber(ARGV[1]) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + floor(tonumber(t[2]) / 1000)
end

-- records -------------------------------------------------------------------

local function num(x) if x == '-' then return nil end return tonumber(x) end
local function str(x) if x == '-' then return nil end return x end
local function dash(v) if v == nil then return '-' end return v end

-- One match per line part: splitting with gmatch costs three times as much.
local HEADER = '^R4|' .. string.rep('([^|]*)|', 23) .. '([^|\n]*)()'
local HEADER_R3 = '^R3|' .. string.rep('([^|]*)|', 21) .. '([^|\n]*)()'
local HEADER_R2 = '^R2|' .. string.rep('([^|]*)|', 19) .. '([^|\n]*)()'
local HEADER_R1 = '^R1|' .. string.rep('([^|]*)|', 17) .. '([^|\n]*)()'
local PARTICIPANT = '^|' .. string.rep('([^|]*)|', 9) .. '([^|\n]*)()'
local PARTICIPANT_R2 = '^|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|\n]*)()'

-- A state: the record's fields, `active` as a 1-based position, and each
-- participant's `bank` (its total_time_ms = time_remaining_ms). Fields the
-- model only carries stay text; encode_state writes them back unchanged.
local function decode_state(raw)
  local sid, mode, status, version, active, total, tpc, cs, started, completed, inc, maxt,
    created, updated, stm, exp, expiry, idle, reason, tc, lag, lw, warned, count, pos, _
  local tag = raw:sub(1, 3)
  if tag == 'R1|' then
    sid, mode, status, version, active, total, tpc, cs, started, completed, inc, maxt,
      created, updated, stm, exp, expiry, count, pos = string.match(raw, HEADER_R1)
    idle, reason, tc, lag, lw, warned = '0', '-', '-', '-', '-', '0'
  elseif tag == 'R2|' then
    sid, mode, status, version, active, total, tpc, cs, started, completed, inc, maxt,
      created, updated, stm, exp, expiry, idle, reason, count, pos = string.match(raw, HEADER_R2)
    tc, lag, lw, warned = '-', '-', '-', '0'
  elseif tag == 'R3|' then
    sid, mode, status, version, active, total, tpc, cs, started, completed, inc, maxt,
      created, updated, stm, exp, expiry, idle, reason, tc, lag, count, pos = string.match(raw, HEADER_R3)
    lw, warned = '-', '0'
  else
    sid, mode, status, version, active, total, tpc, cs, started, completed, inc, maxt,
      created, updated, stm, exp, expiry, idle, reason, tc, lag, lw, warned, count, pos =
      string.match(raw, HEADER)
  end
  local r3 = tag == 'R3|' or tag == 'R4|'
  active = num(active)
  local st = {
    session_id = sid, sync_mode = mode, status = status, version = tonumber(version),
    active = active and active + 1, total_time_ms = tonumber(total), time_per_cycle_ms = num(tpc),
    cycle_started_at = num(cs), session_started_at = str(started),
    session_completed_at = str(completed), increment_ms = tonumber(inc), max_time_ms = str(maxt),
    created_at = created, updated_at = tonumber(updated), cycle_expiry = str(expiry),
    idle_cycles = tonumber(idle), expiry_reason = str(reason), participants = {},
    time_control = str(tc), lag = str(lag), low_time = num(lw), warned = warned == '1',
    -- Kept as stored for a write that is not a transition (a low-time warning).
    server_time_ms = stm, expires_at = str(exp),
  }
  for k = 1, tonumber(count) do
    local id, index, bank, used, cycles, expired, group, ctl, clock, quota, next_pos
    if r3 then
      id, index, bank, used, cycles, expired, group, ctl, clock, quota, next_pos =
        string.match(raw, PARTICIPANT, pos)
    else
      id, index, bank, used, cycles, expired, group, next_pos = string.match(raw, PARTICIPANT_R2, pos)
      ctl, clock, quota = '-', '-', '-'
    end
    local p = {
      participant_id = id, participant_index = index, bank = tonumber(bank),
      time_used_ms = tonumber(used), cycle_count = tonumber(cycles),
      has_expired = expired == '1', group_id = str(group), control = str(ctl),
      lag_quota = num(quota), overtime = false,
    }
    if clock ~= '-' then
      local pl, ml, sg, ot, tm = string.match(clock, '^([^,]*),([^,]*),([^,]*),([01]),(%d+)$')
      p.periods_left, p.moves_left, p.stage, p.overtime = num(pl), num(ml), num(sg), ot == '1'
      p.turn_ms = tonumber(tm)
    end
    st.participants[k] = p
    pos = next_pos
  end
  if pos <= #raw then st.metadata = raw:sub(pos + 1) end
  return st
end

local function encode_state(st)
  local t = {
    'R4', st.session_id, st.sync_mode, st.status, st.version, st.active and st.active - 1 or '-',
    st.total_time_ms, dash(st.time_per_cycle_ms), dash(st.cycle_started_at),
    dash(st.session_started_at), dash(st.session_completed_at), st.increment_ms,
    dash(st.max_time_ms), st.created_at, st.updated_at, st.server_time_ms, dash(st.expires_at),
    dash(st.cycle_expiry), st.idle_cycles, dash(st.expiry_reason), dash(st.time_control),
    dash(st.lag), dash(st.low_time), st.warned and '1' or '0', #st.participants,
  }
  local n = 25
  for _, p in ipairs(st.participants) do
    t[n + 1], t[n + 2], t[n + 3], t[n + 4] = p.participant_id, p.participant_index, p.bank, p.time_used_ms
    t[n + 5], t[n + 6], t[n + 7] = p.cycle_count, p.has_expired and '1' or '0', p.group_id or '-'
    t[n + 8] = p.control or '-'
    local tm = p.turn_ms or 0
    if p.periods_left == nil and p.moves_left == nil and p.stage == nil and not p.overtime
      and tm == 0 then
      t[n + 9] = '-'
    else
      t[n + 9] = dash(p.periods_left) .. ',' .. dash(p.moves_left) .. ',' .. dash(p.stage) .. ','
        .. (p.overtime and '1' or '0') .. ',' .. tm
    end
    t[n + 10] = dash(p.lag_quota)
    n = n + 10
  end
  local s = concat(t, '|')
  if st.metadata then return s .. '\n' .. st.metadata end
  return s
end

-- the model (mirrors core/src/model.rs and core/src/view.rs) ---------------

local function has_bank(st) return st.sync_mode ~= 'count_up' or st.max_time_ms ~= nil end
local function gkey(p) return p.group_id or p.participant_id end

-- Sets the bank that participant i shares: its own, its group's, or everyone's.
local function set_bank(st, i, bank)
  local m, ps = st.sync_mode, st.participants
  if m == 'per_participant' or m == 'per_cycle' then
    ps[i].bank = bank
  elseif m == 'per_group' then
    local g = gkey(ps[i])
    for _, p in ipairs(ps) do if gkey(p) == g then p.bank = bank end end
  else
    for _, p in ipairs(ps) do p.bank = bank end
  end
end

-- time controls (mirror core/src/control.rs) --------------------------------

local controls = {}

-- The compact form (core/src/control.rs, TimeControl::to_compact) as a table.
local function parse_control(text)
  local c = controls[text]
  if c then return c end
  local kind = text:sub(1, 1)
  c = { kind = kind }
  if kind == 'f' then c.inc, c.delay, c.simple = tonumber(text:sub(3)), 0, false
  elseif kind == 'b' then c.inc, c.delay, c.simple = 0, tonumber(text:sub(3)), false
  elseif kind == 's' then c.inc, c.delay, c.simple = 0, tonumber(text:sub(3)), true
  elseif kind == 'y' or kind == 'c' then
    local a, b = string.match(text, '^.,(%d+),(%d+)$')
    c.count, c.period = tonumber(a), tonumber(b)
  elseif kind == 'g' then
    c.stages = {}
    for moves, add, inc, delay, dk in string.gmatch(text, ';([^,]*),([^,]*),([^,]*),([^,]*),([bs])') do
      c.stages[#c.stages + 1] = { moves = num(moves), add = tonumber(add), inc = tonumber(inc),
        delay = tonumber(delay), simple = dk == 's' }
    end
  end
  controls[text] = c
  return c
end

-- The control of participant i (view::control_of): its own, the session's, or
-- Fischer with increment_ms; nil for modes without controls.
local function control_of(st, i)
  local m = st.sync_mode
  if m ~= 'per_participant' and m ~= 'per_group' then return nil end
  local text = st.participants[i].control or st.time_control or ('f,' .. st.increment_ms)
  return parse_control(text)
end

local function clock_of(st, i)
  local p = st.participants[i]
  return { main = p.bank, periods = p.periods_left or 0, moves = p.moves_left or 0,
    stage = p.stage or 0, overtime = p.overtime, turn = p.turn_ms or 0 }
end

-- increment, delay, simple? of a move (the current stage's for stages)
local function inc_delay(c, k)
  if c.kind == 'g' then
    local s = c.stages[k.stage + 1]
    if not s then return 0, 0, false end
    return s.inc, s.delay, s.simple
  end
  return c.inc or 0, c.delay or 0, c.simple or false
end

local function fall_after(c, k)
  if c.kind == 'y' then return k.main + k.periods * c.period - k.turn end
  if c.kind == 'c' and not k.overtime then return k.main + c.period end
  local _, delay, simple = inc_delay(c, k)
  if simple then return max(0, delay - k.turn) + k.main end
  return k.main
end

-- Byo-yomi: main time first, then periods from the running one's progress;
-- returns the progress into the period left running.
local function byoyomi_charge(c, k, e)
  if e <= k.main then k.main = k.main - e; return k.turn end
  local over = e - k.main + k.turn
  k.main = 0
  local used = floor(over / c.period)
  if used > k.periods then used = k.periods end
  k.periods = k.periods - used
  if k.periods == 0 then return 0 end
  return over % c.period
end

local function on_move(c, k, e)
  if c.kind == 'y' then
    byoyomi_charge(c, k, e)
    k.turn = 0
  elseif c.kind == 'c' then
    if not k.overtime then
      if e <= k.main then k.main = k.main - e; return end
      k.overtime = true
      k.main = c.period - (e - k.main)
      k.moves = c.count
    else
      k.main = k.main - e
    end
    k.moves = k.moves - 1
    if k.moves <= 0 then k.main, k.moves = c.period, c.count end
  elseif c.kind == 'h' then
    k.main = k.main - e
  else
    local inc, delay, simple = inc_delay(c, k)
    local tm = k.turn
    local used = delay < tm + e and delay or tm + e
    if simple then k.main = k.main - (tm + e - used) + inc
    else k.main = k.main - (e - used) + inc end
    k.turn = 0
    if c.kind == 'g' and c.stages[k.stage + 1].moves then
      k.moves = k.moves - 1
      if k.moves <= 0 and k.stage + 1 < #c.stages then
        k.stage = k.stage + 1
        local nxt = c.stages[k.stage + 1]
        k.main = k.main + nxt.add
        k.moves = nxt.moves or 0
      elseif k.moves < 0 then
        k.moves = 0
      end
    end
  end
end

local function on_stop(c, k, e)
  if c.kind == 'y' then k.turn = byoyomi_charge(c, k, e); return end
  if c.kind == 'c' then
    if k.overtime or e <= k.main then k.main = k.main - e
    else k.overtime, k.main, k.moves = true, c.period - (e - k.main), c.count end
    return
  end
  local _, delay, simple = inc_delay(c, k)
  local tm = k.turn
  local waited = delay < tm + e and delay or tm + e
  if simple then k.main = k.main - (tm + e - waited) else k.main = k.main - e end
  if delay > 0 then k.turn = waited else k.turn = 0 end
end

-- Writes participant i's clock to every participant sharing its bank,
-- keeping only what its control uses.
local function store_clock(st, i, c, k)
  local y, cn, g = c.kind == 'y', c.kind == 'c', c.kind == 'g'
  local m, ps = st.sync_mode, st.participants
  local function put(p)
    p.bank = k.main
    p.periods_left = y and k.periods or nil
    p.moves_left = (cn or g) and k.moves or nil
    p.stage = g and k.stage or nil
    p.overtime = cn and k.overtime or false
    p.turn_ms = k.turn
  end
  if m == 'per_group' then
    local key = gkey(ps[i])
    for _, p in ipairs(ps) do if gkey(p) == key then put(p) end end
  else
    put(ps[i])
  end
end

local function hourglass_gain(st, i, c, used)
  if c.kind == 'h' and #st.participants == 2 then
    local o = st.participants[3 - i]
    o.bank = o.bank + used
  end
end

local function deadline(st)
  if st.status ~= 'running' or not has_bank(st) or not st.active or not st.cycle_started_at then
    return nil
  end
  local c = control_of(st, st.active)
  if c then return st.cycle_started_at + fall_after(c, clock_of(st, st.active)) end
  return st.cycle_started_at + st.participants[st.active].bank
end

-- A turn that ends without a move (pause, complete, cancel, expiry).
local function charge(st, i, elapsed)
  local p = st.participants[i]
  p.time_used_ms = p.time_used_ms + elapsed
  local c = control_of(st, i)
  if c then
    local k = clock_of(st, i)
    on_stop(c, k, elapsed)
    store_clock(st, i, c, k)
    hourglass_gain(st, i, c, elapsed)
  elseif has_bank(st) then
    set_bank(st, i, p.bank - elapsed)
  end
end

-- The lag of the switch being applied, '<claimed>,<credited>', for its audit
-- event (sessions that compensate lag only).
local switch_lag = nil

-- A move: the claimed lag is credited from the quota first.
local function charge_move(st, i, elapsed)
  local p = st.participants[i]
  local e = elapsed
  if st.lag then
    local init, gain, lmax = string.match(st.lag, '^(-?%d+),(-?%d+),(-?%d+)$')
    init, gain, lmax = tonumber(init), tonumber(gain), tonumber(lmax)
    local quota = p.lag_quota or init
    local claim = tonumber(ARGV[19]) or 0
    if claim < 0 then claim = 0 end
    local q = quota > 0 and quota or 0
    local credited = claim < q and claim or q
    quota = quota + gain - credited
    if quota > lmax then quota = lmax end
    p.lag_quota = quota
    e = max(0, elapsed - credited)
    switch_lag = claim .. ',' .. credited
  end
  p.time_used_ms = p.time_used_ms + e
  local c = control_of(st, i)
  if c then
    local k = clock_of(st, i)
    on_move(c, k, e)
    store_clock(st, i, c, k)
    hourglass_gain(st, i, c, e)
  elseif has_bank(st) then
    set_bank(st, i, p.bank - e)
  end
end

local function finish_as(st, status, at)
  st.active, st.status, st.cycle_started_at, st.session_completed_at = nil, status, nil, at
  st.expiry_reason, st.warned = nil, false
end

-- When the session ends by itself if nobody acts (mirrors view::end_at).
local function end_at(st)
  local d = deadline(st)
  if d then return d end
  local s = st.status
  if s == 'expired' or s == 'completed' or s == 'cancelled' then return nil end
  return st.updated_at + tonumber(ARGV[14]) * 1000
end

-- When the running turn's low-time warning is due (mirrors view::warn_at).
local function warn_at(st)
  if not st.low_time or st.low_time <= 0 or st.warned then return nil end
  local d = deadline(st)
  if d then return d - st.low_time end
  return nil
end

-- When the scheduler must look at the session next (mirrors view::wake_at).
local function wake_at(st)
  return warn_at(st) or end_at(st)
end

local function bump(st, now)
  st.version = st.version + 1
  st.updated_at, st.server_time_ms = now, now
  st.expires_at = deadline(st)
end

local function cycle_ms(st) return st.time_per_cycle_ms or st.total_time_ms end

local function auto_advance(st, i, d1, k)
  local ps = st.participants
  local n, c = #ps, cycle_ms(st)
  local first_turn = ps[i].bank
  for j = 1, n do
    local d = (j - i) % n
    if d < k then
      local turns = floor((k - 1 - d) / n) + 1
      local p = ps[j]
      p.time_used_ms = p.time_used_ms + turns * c
      p.cycle_count = p.cycle_count + turns
      p.has_expired = true
    end
  end
  ps[i].time_used_ms = ps[i].time_used_ms - (c - first_turn)
  for _, p in ipairs(ps) do p.bank = c end
  st.active = (i - 1 + k) % n + 1
  st.cycle_started_at = d1 + (k - 1) * c
  st.warned = false
end

-- Applies a passed deadline or idle end; returns the event type and who ran
-- out (nil for an idle end).
local function settle(st, now)
  local d = deadline(st)
  if d == nil then
    local idle_end = end_at(st)
    if idle_end == nil or now < idle_end then return nil end
    if st.status == 'running' and st.active and st.cycle_started_at then
      charge(st, st.active, max(0, idle_end - st.cycle_started_at))
    end
    finish_as(st, 'expired', idle_end)
    st.expiry_reason = 'idle_timeout'
    return 'session_expired', nil
  end
  if now < d then return nil end
  local i = st.active
  local ends_at, reason = d, 'time_ran_out'
  if st.sync_mode == 'per_cycle' and st.cycle_expiry == 'auto_advance' then
    local c = cycle_ms(st)
    local k = 1 + floor((now - d) / c)
    local limit = tonumber(ARGV[13])
    local room = math.huge
    if limit > 0 then room = max(1, limit - st.idle_cycles) end
    if k < room then
      local pid = st.participants[i].participant_id
      auto_advance(st, i, d, k)
      st.idle_cycles = st.idle_cycles + k
      return 'cycle_expired', pid
    end
    if room > 1 then
      auto_advance(st, i, d, room - 1)
      i = st.active
      ends_at = d + (room - 1) * c
    end
    st.idle_cycles = st.idle_cycles + room
    reason = 'idle_cycles'
  end
  local pid = st.participants[i].participant_id
  charge(st, i, ends_at - (st.cycle_started_at or ends_at))
  st.participants[i].has_expired = true
  finish_as(st, 'expired', ends_at)
  st.expiry_reason = reason
  return 'session_expired', pid
end

local function refuse(st, action)
  return '"kind":"error","code":"INVALID_STATE_TRANSITION","action":"' .. action
    .. '","status":"' .. st.status .. '"'
end

local function rotation(st, i)
  local ps = st.participants
  local n = #ps
  if st.sync_mode ~= 'per_group' then return i % n + 1 end
  local groups, pos = {}, {}
  for j = 1, n do
    local g = gkey(ps[j])
    if not pos[g] then groups[#groups + 1] = g; pos[g] = #groups end
  end
  local nextg = groups[pos[gkey(ps[i])] % #groups + 1]
  local best
  for j = 1, n do
    if gkey(ps[j]) == nextg and (best == nil or ps[j].cycle_count < ps[best].cycle_count) then
      best = j
    end
  end
  return best or i
end

local function elapsed(st, now) return max(0, now - st.cycle_started_at) end

local cmds = {}

function cmds.start(st, now)
  if st.status ~= 'pending' then return nil, refuse(st, 'start') end
  st.active, st.status, st.cycle_started_at, st.session_started_at = 1, 'running', now, now
  st.warned = false
  return 'session_started'
end

function cmds.switch(st, now)
  if st.status ~= 'running' then return nil, refuse(st, 'switch') end
  local named
  if ARGV[10] ~= '' then
    local id = string.lower(ARGV[10])
    for j, p in ipairs(st.participants) do if p.participant_id == id then named = j end end
    if not named then
      return nil, '"kind":"error","code":"PARTICIPANT_NOT_FOUND","participant_id":' .. cjson.encode(ARGV[10])
    end
  end
  local i, mode = st.active, st.sync_mode
  charge_move(st, i, elapsed(st, now))
  st.participants[i].cycle_count = st.participants[i].cycle_count + 1
  local target = named or rotation(st, i)
  if mode == 'per_cycle' then
    st.participants[i].bank = cycle_ms(st)
    st.participants[target].bank = cycle_ms(st)
  end
  st.active, st.cycle_started_at, st.warned = target, now, false
  return 'participant_switched'
end

function cmds.pause(st, now)
  if st.status ~= 'running' then return nil, refuse(st, 'pause') end
  charge(st, st.active, elapsed(st, now))
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
  if s == 'running' then charge(st, st.active, elapsed(st, now)) end
  finish_as(st, status, now)
  return event
end

function cmds.complete(st, now) return finish(st, now, 'complete', 'completed', 'session_completed') end
function cmds.cancel(st, now) return finish(st, now, 'cancel', 'cancelled', 'session_cancelled') end

-- create -------------------------------------------------------------------

local function nn(v) if v == cjson.null then return nil end return v end

local function initial_state(now)
  local spec = cjson.decode(ARGV[10])
  local mode = spec.sync_mode
  local tpc, maxt = nn(spec.time_per_cycle_ms), nn(spec.max_time_ms)
  local ps = {}
  for i, s in ipairs(spec.participants) do
    ps[i] = {
      participant_id = s.participant_id, participant_index = s.participant_index,
      bank = s.total_time_ms, time_used_ms = 0, cycle_count = 0, has_expired = false,
      group_id = nn(s.group_id), control = nn(s.tc), overtime = false,
    }
  end
  local banks = {}
  for i, p in ipairs(ps) do
    local bank = p.bank
    if mode == 'per_cycle' then
      bank = tpc or spec.total_time_ms
    elseif mode == 'per_group' then
      for _, q in ipairs(ps) do
        if gkey(q) == gkey(p) then bank = q.bank; break end
      end
    elseif mode == 'global' then
      bank = spec.total_time_ms
    elseif mode == 'count_up' and maxt then
      bank = maxt
    end
    banks[i] = bank
  end
  local lag = nn(spec.lag)
  local init = lag and tonumber(string.match(lag, '^(-?%d+),')) or nil
  for i, p in ipairs(ps) do p.bank, p.lag_quota = banks[i], init end
  local st = {
    session_id = spec.session_id, sync_mode = mode, status = 'pending', version = 1,
    participants = ps, total_time_ms = spec.total_time_ms, time_per_cycle_ms = tpc,
    increment_ms = spec.increment_ms or 0, max_time_ms = maxt,
    created_at = now, updated_at = now, server_time_ms = now,
    metadata = ARGV[11] ~= '' and ARGV[11] or nil, cycle_expiry = nn(spec.cycle_expiry),
    idle_cycles = 0, time_control = nn(spec.tc), lag = lag, warned = false,
  }
  local lw = nn(spec.low_time_warning_ms)
  if lw and lw > 0 then st.low_time = lw end
  for i = 1, #ps do
    local c = control_of(st, i)
    if c then
      local k = clock_of(st, i)
      if c.kind == 'y' then k.periods = c.count end
      if c.kind == 'g' then k.moves = c.stages[1] and c.stages[1].moves or 0 end
      store_clock(st, i, c, k)
    end
  end
  return st
end

-- effects ------------------------------------------------------------------

local function xadd(ev)
  local f = { 'XADD', KEYS[3], '*', 'type', ev[1], 'sid', ARGV[2], 'v', ev[2], 'at', ev[3] }
  if ARGV[5] ~= '' then f[#f + 1], f[#f + 2] = 'actor', ARGV[5] end
  if ev[5] then f[#f + 1], f[#f + 2] = 'lag', ev[5] end
  if ev[6] then f[#f + 1], f[#f + 2], f[#f + 3], f[#f + 4] = 'due', ev[6], 'warn', ev[7] end
  f[#f + 1], f[#f + 2] = 'snap', ev[4]
  redis.call(unpack(f))
end

-- The shard's earliest scheduled session, as a JSON value for the expire
-- reply (the scheduler sleeps until it).
local function next_due()
  local head = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  if #head == 0 then return 'null' end
  return '{"session_id":"' .. head[1] .. '","at_ms":' .. head[2] .. '}'
end

-- Schedules the session at `at` (nil: unschedules it), waking the scheduler
-- when that is earlier than anything else in the shard.
local function schedule(at)
  if at == nil then
    redis.call('ZREM', KEYS[2], ARGV[2])
    return
  end
  local head = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  redis.call('ZADD', KEYS[2], at, ARGV[2])
  if #head == 0 or at < tonumber(head[2]) then
    redis.call('PUBLISH', ARGV[17], ARGV[18] .. ':' .. at .. ':' .. ARGV[2])
  end
end

-- Writes the final state, its wake time and TTL (its end plus the base TTL:
-- a backstop, the scheduler ends the session first), publishes it when a
-- transition happened, appends the events.
local function persist(st, now, events, publish)
  local record = events[#events][4]
  local base = tonumber(ARGV[8]) * 1000
  local ends = end_at(st)
  if ends then
    redis.call('SET', KEYS[1], record, 'PX', max(base, ends - now + base))
  else
    redis.call('SET', KEYS[1], record, 'PX', base)
  end
  schedule(warn_at(st) or ends)
  if publish then redis.call('PUBLISH', ARGV[3], record) end
  for _, ev in ipairs(events) do xadd(ev) end
end

local function event(events, st, t, now, by_command)
  if by_command then st.idle_cycles = 0 end
  bump(st, now)
  local lag = nil
  if by_command and t == 'participant_switched' then lag = switch_lag end
  events[#events + 1] = { t, st.version, now, encode_state(st), lag }
end

local function state_header(expired)
  if expired then return '"kind":"state","expired_participant_id":"' .. expired .. '"' end
  return '"kind":"state","expired_participant_id":null'
end

-- Returns the header body (no braces), the record if any, whether it is a
-- success, and the rate-limit part, if any.
local function dispatch(cmd, now)
  local sid = ARGV[2]
  local raw = redis.call('GET', KEYS[1])
  if cmd == 'create' then
    if raw then return '"kind":"error","code":"SESSION_EXISTS"', nil, false end
    if redis.call('EXISTS', KEYS[6]) == 1 then
      return '"kind":"error","code":"SESSION_DELETED"', nil, false
    end
    local st = initial_state(now)
    local record = encode_state(st)
    persist(st, now, { { 'session_created', 1, now, record } }, true)
    return state_header(nil), record, true
  end
  if cmd == 'delete' then
    if not raw then return '"kind":"deleted","existed":false', nil, true end
    local version = decode_state(raw).version + 1
    redis.call('DEL', KEYS[1], KEYS[4], KEYS[5], KEYS[7])
    redis.call('SET', KEYS[6], version, 'EX', ARGV[15])
    redis.call('ZREM', KEYS[2], sid)
    redis.call('PUBLISH', ARGV[3], '{"type":"SESSION_DELETED","session_id":"' .. sid
      .. '","version":' .. version .. ',"server_time_ms":' .. now .. '}')
    xadd({ 'session_deleted', version, now, raw })
    return '"kind":"deleted","existed":true', nil, true
  end
  if not raw then
    if cmd == 'expire' then redis.call('ZREM', KEYS[2], sid) end
    return '"kind":"error","code":"SESSION_NOT_FOUND"', nil, false
  end
  local st = decode_state(raw)
  if ARGV[4] ~= '' and tonumber(ARGV[4]) ~= st.version then
    return '"kind":"error","code":"CONFLICT","expected_version":' .. ARGV[4]
      .. ',"actual_version":' .. st.version, nil, false
  end
  if ARGV[12] == '1' and st.active
    and string.lower(ARGV[5]) ~= st.participants[st.active].participant_id then
    return '"kind":"error","code":"NOT_YOUR_TURN","participant_id":' .. cjson.encode(ARGV[5]), nil, false
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
    redis.call('SET', KEYS[5], window .. ':' .. count, 'PX', ARGV[1] ~= '' and 600000 or 2000)
    local reset = floor(((window + 1) * 1000 - now + 999) / 1000)
    rate = '{"limit":' .. limit .. ',"remaining":' .. max(0, limit - count)
      .. ',"reset_seconds":' .. reset .. '}'
    if count > limit then
      return '"kind":"error","code":"RATE_LIMIT_EXCEEDED","retry_after_seconds":' .. reset, nil, false, rate
    end
  end

  local events = {}
  local settled, expired = settle(st, now)
  if settled then event(events, st, settled, now, false) end
  local err
  if cmd ~= 'expire' and not (cmd == 'switch' and settled) then
    local t
    t, err = cmds[cmd](st, now)
    if t then event(events, st, t, now, true) end
  end
  -- The running turn's low-time warning, if due and not yet fired: not a
  -- transition (no version, no publish), but the state stores that it fired.
  local changed = #events > 0
  local due = warn_at(st)
  if due and due <= now then
    st.warned = true
    events[#events + 1] = { 'low_time_warning', st.version, now, encode_state(st), nil, due, st.low_time }
  end
  if #events > 0 then persist(st, now, events, changed) end
  if cmd == 'expire' and not settled then
    local at = wake_at(st)
    if #events == 0 then schedule(at) end
    return '"kind":"not_due","status":"' .. st.status .. '","deadline_ms":' .. (at or 'null'), nil, true
  end
  if err then return err, nil, false, rate end
  return state_header(expired), events[#events][4], true, rate
end

-- Idempotency: the session's HASH KEYS[4] maps each Idempotency-Key to
-- 'cmd|fingerprint|stored_at_ms|' .. first header .. ['\n' .. record]; the
-- field ' order' (a space: no key has one) lists the keys oldest first, and
-- past ARGV[16] keys the oldest goes. An entry older than the TTL counts as
-- absent. The fingerprint covers everything that makes the request itself.
local ORDER = ' order'

local function fingerprint()
  return redis.sha1hex(ARGV[4] .. '\0' .. ARGV[5] .. '\0' .. ARGV[10] .. '\0' .. ARGV[11]
    .. '\0' .. ARGV[12])
end

local function remember(cmd, fp, now, reply)
  local key, keep = ARGV[6], tonumber(ARGV[16])
  local order = {}
  for k in string.gmatch(redis.call('HGET', KEYS[4], ORDER) or '', '%S+') do
    if k ~= key then order[#order + 1] = k end
  end
  order[#order + 1] = key
  local drop = #order - keep
  if drop > 0 then
    local gone = {}
    for j = 1, drop do gone[j] = order[j] end
    redis.call('HDEL', KEYS[4], unpack(gone))
    local rest = {}
    for j = drop + 1, #order do rest[#rest + 1] = order[j] end
    order = rest
  end
  redis.call('HSET', KEYS[4], key, cmd .. '|' .. fp .. '|' .. now .. '|' .. reply,
    ORDER, concat(order, ' '))
  redis.call('EXPIRE', KEYS[4], ARGV[7])
end

local function run(cmd)
  local now = now_ms()
  local idem = ARGV[6] ~= ''
  local fp
  if idem then
    fp = fingerprint()
    local prev = redis.call('HGET', KEYS[4], ARGV[6])
    if prev then
      local c, f, at, sep = string.match(prev, '^([^|]*)|([^|]*)|([^|]*)|()')
      if tonumber(at) + tonumber(ARGV[7]) * 1000 > now then
        if c ~= cmd or f ~= fp then
          return { '{"replayed":false,"kind":"error","code":"IDEMPOTENCY_KEY_REUSED"}' }
        end
        local nl = string.find(prev, '\n', sep, true)
        local header = '{"replayed":true' .. prev:sub(sep + 17, (nl or 0) - 1)
        if nl then return { header, prev:sub(nl + 1) } end
        return { header }
      end
    end
  end
  local body, record, ok, rate = dispatch(cmd, now)
  if cmd == 'expire' then body = body .. ',"next":' .. next_due() end
  local header = '{"replayed":false' .. (rate and (',"rate":' .. rate) or '') .. ',' .. body .. '}'
  if idem and ok then remember(cmd, fp, now, header .. (record and ('\n' .. record) or '')) end
  if record then return { header, record } end
  return { header }
end
