-- Garbage-collection-heavy Lua for `compare`: tables and strings made and
-- dropped while a rolling set stays alive, so the collector runs often.
-- Usage: lua5.4 gc.lua SCALE. Prints `checksum N`, the same under every
-- correct allocator (Lua allocates through realloc and free).
local scale = tonumber(arg[1])
local n = math.max(1000, math.floor(2400000 * scale))
local keep = {}
local sum = 0
for i = 1, n do
  local t = { id = i, name = "obj" .. i, list = { i, i + 1, i + 2 } }
  t.text = string.rep("x", i % 64) .. tostring(i)
  keep[i % 20000 + 1] = t
  if i % 1000 == 0 then
    local parts = {}
    for j = 1, 200 do parts[#parts + 1] = tostring(j * i) end
    sum = sum + #table.concat(parts, ",")
  end
  sum = (sum + #t.text + #t.list) % 1000000007
end
for _, t in pairs(keep) do sum = (sum + #t.name) % 1000000007 end
print("checksum " .. sum)
