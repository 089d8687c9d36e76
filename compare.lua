local function read(p)
  local t = {}
  for l in io.lines(p) do t[#t + 1] = tonumber(l:match("%d+ (%S+)")) end
  return t
end
local a, b, early, tol = read(arg[1]), read(arg[2]), tonumber(arg[3]), tonumber(arg[4])
if #a ~= #b or #a < 10 then print("steps: " .. #a .. " against " .. #b) os.exit(1) end
local w1, w2 = 0, 0
for i = 1, #a do
  local d = math.abs(a[i] - b[i]) / math.max(math.abs(b[i]), 1e-3)
  if i <= early then w1 = math.max(w1, d) else w2 = math.max(w2, d) end
end
print(string.format("%d steps: worst relative difference %.1e in the first %d, %.1e after", #a, w1, early, w2))
os.exit(w1 <= 1e-5 and w2 <= tol and 0 or 1)
