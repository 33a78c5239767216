
-- devices: registers or removes a participant's mobile push token
-- (core/src/devices.rs). Concatenated after lib.lua only for decode_state
-- and now_ms; its KEYS and ARGV are its own. Never bumps the version,
-- publishes or audits: push tokens are not session state.
--
-- KEYS: 1 the session's state  2 the session's devices HASH  (one hash slot)
-- ARGV: 1 now_ms ('' = Redis TIME; tests only)  2 'register' | 'remove'
--       3 participant id (remove: '' = whoever registered the token)
--       4 token  5 platform (register)  6 registration TTL ms
--       7 devices kept per participant  8 devices kept per session
-- Hash: field '<participant_id>\n<token>',
--       value '<platform>|<expires_at_ms>|<registered_at_ms>'.
-- Reply: { header JSON }.
--
-- Every call prunes expired entries, and leaves the hash's PEXPIRE at its
-- longest-lived entry (or deletes it when none is left).

local function devices()
  local now = now_ms()
  local raw = redis.call('GET', KEYS[1])
  if not raw then return { '{"kind":"error","code":"SESSION_NOT_FOUND"}' } end
  local op, pid, token = ARGV[2], ARGV[3], ARGV[4]
  if op == 'register' then
    local member = false
    for _, p in ipairs(decode_state(raw).participants) do
      if p.participant_id == pid then member = true break end
    end
    if not member then
      return { '{"kind":"error","code":"PARTICIPANT_NOT_FOUND","participant_id":"' .. pid .. '"}' }
    end
  end

  local all = redis.call('HGETALL', KEYS[2])
  local live, gone = {}, {}
  for i = 1, #all, 2 do
    local f = all[i]
    local owner, tok = string.match(f, '^([^\n]*)\n(.*)$')
    local _, exp, reg = string.match(all[i + 1], '^([^|]*)|(%-?%d+)|(%-?%d+)$')
    if owner and exp and tonumber(exp) > now then
      live[#live + 1] = { f = f, owner = owner, token = tok, exp = tonumber(exp), reg = tonumber(reg) }
    else
      gone[#gone + 1] = f
    end
  end

  local header
  if op == 'remove' then
    local existed, keep = false, {}
    for _, d in ipairs(live) do
      if d.token == token and (pid == '' or d.owner == pid) then
        existed = true
        gone[#gone + 1] = d.f
      else
        keep[#keep + 1] = d
      end
    end
    live = keep
    header = '{"kind":"removed","existed":' .. tostring(existed) .. '}'
  else
    -- A token belongs to one participant at a time: registering it drops
    -- it from anyone else in the session.
    local field, created, keep = pid .. '\n' .. token, true, {}
    for _, d in ipairs(live) do
      if d.f == field then
        created = false
      elseif d.token == token then
        gone[#gone + 1] = d.f
      else
        keep[#keep + 1] = d
      end
    end
    live = keep
    -- Oldest first (ties by field), so the bounds drop the oldest.
    table.sort(live, function(a, b)
      if a.reg ~= b.reg then return a.reg < b.reg end
      return a.f < b.f
    end)
    local mine, per = 0, tonumber(ARGV[7])
    for _, d in ipairs(live) do if d.owner == pid then mine = mine + 1 end end
    keep = {}
    for _, d in ipairs(live) do
      if d.owner == pid and mine >= per then
        gone[#gone + 1] = d.f
        mine = mine - 1
      else
        keep[#keep + 1] = d
      end
    end
    live = keep
    local over = #live + 1 - tonumber(ARGV[8])
    keep = {}
    for j, d in ipairs(live) do
      if j <= over then gone[#gone + 1] = d.f else keep[#keep + 1] = d end
    end
    live = keep
    local exp = now + tonumber(ARGV[6])
    live[#live + 1] = { f = field, exp = exp }
    redis.call('HSET', KEYS[2], field, ARGV[5] .. '|' .. exp .. '|' .. now)
    header = '{"kind":"registered","created":' .. tostring(created) .. ',"expires_at_ms":' .. exp .. '}'
  end

  for j = 1, #gone, 1000 do
    redis.call('HDEL', KEYS[2], unpack(gone, j, math.min(j + 999, #gone)))
  end
  local last = 0
  for _, d in ipairs(live) do if d.exp > last then last = d.exp end end
  if last > now then
    redis.call('PEXPIRE', KEYS[2], last - now)
  else
    redis.call('DEL', KEYS[2])
  end
  return { header }
end

return devices()
