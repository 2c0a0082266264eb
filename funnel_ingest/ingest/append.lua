-- Append one request's normalized items to the streams, atomically.
-- Atomic so that the dedupe mark and the stream entry can never exist one without the other:
-- a request that fails half-way leaves nothing, and its redelivery is appended in full.
--
-- ARGV[1] shards, ARGV[2] stream prefix, ARGV[3] dedupe ttl (s), ARGV[4] maxlen (0 = none),
-- ARGV[5] status stream, ARGV[6] dead-letter stream, ARGV[7] room key prefix, ARGV[8] seen prefix,
-- ARGV[9] force ('1': append even when the dedupe mark exists — the reconcile path re-enqueues
-- archived items found neither in Postgres nor on a stream; the engine's unique key drops any
-- copy that turns out to be stored already), ARGV[10] room ttl (s, 0 = none), then per item: kind ('m'|'s'|'d'), dedupe id, room field ('' = none), customer key
-- ('' = resolve from room), direction, the entry's fields as one JSON object of strings.
-- Returns {appended, duplicates, pending_room}.
local shards = tonumber(ARGV[1])
local prefix = ARGV[2]
local ttl = tonumber(ARGV[3])
local maxlen = tonumber(ARGV[4])
local status_stream = ARGV[5]
local dead_stream = ARGV[6]
local rooms = ARGV[7]
local seen = ARGV[8]
local force = ARGV[9] == '1'
local room_ttl = tonumber(ARGV[10])

-- A room's customer: one key per room, written by the room's first inbound message (first
-- writer wins) and kept for room_ttl after its last use. An expired room is not lost: its
-- messages go to the stream without a customer and the drain resolves them from Postgres'
-- rooms table.
local function room_customer(room)
  local key = rooms .. room
  local customer = redis.call('GET', key)
  if customer and room_ttl > 0 then redis.call('EXPIRE', key, room_ttl) end
  return customer
end

local function learn_room(room, customer)
  if room_ttl > 0 then
    redis.call('SET', rooms .. room, customer, 'NX', 'EX', room_ttl)
  else
    redis.call('SET', rooms .. room, customer, 'NX')
  end
end

local function xadd(stream, fields)
  if maxlen > 0 then
    return redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', unpack(fields))
  end
  return redis.call('XADD', stream, '*', unpack(fields))
end

local function shard_stream(key)
  if shards <= 1 then return prefix end
  local n = tonumber(string.sub(redis.sha1hex(key), 1, 8), 16) % shards
  return prefix .. ':' .. n
end

local appended, duplicates, pending = 0, 0, 0
local i = 11
while i <= #ARGV do
  local kind, id, room, customer, direction = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], ARGV[i+4]
  local fields = {}
  for k, v in pairs(cjson.decode(ARGV[i+5])) do
    fields[#fields + 1] = k
    fields[#fields + 1] = v
  end
  i = i + 6
  local fresh = true
  if id ~= '' then
    if ttl > 0 then
      fresh = redis.call('SET', seen .. id, '1', 'NX', 'EX', ttl)
    else
      fresh = redis.call('SET', seen .. id, '1', 'NX')
    end
  end
  if not fresh and not force then
    duplicates = duplicates + 1
  elseif kind == 's' then
    xadd(status_stream, fields); appended = appended + 1
  elseif kind == 'd' then
    xadd(dead_stream, fields); appended = appended + 1
  else
    if room ~= '' then
      if customer ~= '' and direction == 'inbound' then
        learn_room(room, customer)
        customer = room_customer(room)
      elseif customer == '' then
        customer = room_customer(room) or ''
      end
    end
    local route = customer
    if customer == '' then
      pending = pending + 1
      route = 'room:' .. room
    else
      fields[#fields + 1] = 'customer_key'
      fields[#fields + 1] = customer
    end
    xadd(shard_stream(route), fields); appended = appended + 1
  end
end
return {appended, duplicates, pending}
