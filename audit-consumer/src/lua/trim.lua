-- Trims a shard's audit stream (KEYS[1]) up to what EVERY consumer group has
-- acknowledged: below each group's oldest pending entry and past no group's
-- last delivered entry. A stream with no group is left alone. One script, so
-- the positions read are the positions trimmed at. Returns the entries removed.
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function less(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as < bs)
end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return 0 end
local bound = nil
for _, g in ipairs(groups) do
  local f = {}
  for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
  local ms, seq = parse(f['last-delivered-id'])
  local b = string.format('%d-%d', ms, seq + 1)
  if f['pending'] > 0 then
    b = redis.call('XPENDING', KEYS[1], f['name'])[2]
  end
  if bound == nil or less(b, bound) then bound = b end
end
return redis.call('XTRIM', KEYS[1], 'MINID', bound)
