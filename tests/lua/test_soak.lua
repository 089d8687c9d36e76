-- tests/lua/test_soak.lua: resources stay bounded over long runs (issue 12).  Three soaks,
-- each measured from /proc/self/status (VmRSS, Threads) and /proc/self/fd after a warm-up
-- and then at every quarter of the run:
--   * training: thousands of MoCo steps on a tiny model (4x4 images, resnet20 at width 1/4);
--   * data: many loader epochs with two workers and an augmentation, and loaders created
--     and closed over and over (their threads must be joined, their files closed);
--   * REPL: thousands of lines evaluated by a moco-lua REPL fed through a pipe (each line
--     its own compiled chunk and protected call, results printed), measuring itself.
-- Flat means: after the warm-up the resident size grows by less than RSS_SLACK_MB in total
-- and the thread and descriptor counts do not change.  The short mode takes seconds; set
-- MOCO_SOAK=long for 20 times as many iterations.  Under a sanitizer (MOCO_SANITIZE=1)
-- the resident size is not checked (ASan's quarantine keeps freed memory on purpose;
-- LeakSanitizer checks leaks there) and the counts are divided by 10.
package.path = "tests/lua/?.lua;" .. package.path
local check = require "check"
local moco = require "moco"
local data, T = moco.data, moco.transforms

local long = os.getenv("MOCO_SOAK") == "long"
local sanitized = os.getenv("MOCO_SANITIZE") == "1"
local SCALE = (long and 20 or 1) / (sanitized and 10 or 1)
local RSS_SLACK_MB = 2
local FIXTURES = "tests/fixtures/data"

-- /proc's thread count, once it is settled: a thread that pthread_join has returned for is
-- still counted until the kernel has reaped it (a moment later), so a count read right after
-- a loader closed can be one too many.  Reads until two reads 10 ms apart agree; a thread
-- that really stays alive is still counted.
local function thread_count()
  local t = check.proc_status("Threads")
  for _ = 1, 50 do
    os.execute("sleep 0.01")
    local u = check.proc_status("Threads")
    if u == t then return t end
    t = u
  end
  return t
end

local function resources()
  collectgarbage()
  collectgarbage()
  return { rss_mb = check.proc_status("VmRSS") / 1024, threads = thread_count(),
           fds = #moco._io.listdir("/proc/self/fd") }
end

-- Runs body(i) for i = 1..n, sampling after warm-up (n/5) and at each quarter after it.
local function soak(label, n, body)
  local t0 = os.clock()
  local warm, samples = nil, {}
  local warmup = math.max(1, n // 5)
  local marks = {}
  for q = 1, 4 do marks[warmup + (n - warmup) * q // 4] = true end
  for i = 1, n do
    body(i)
    if i == warmup then warm = resources() end
    if marks[i] then samples[#samples + 1] = resources() end
  end
  local last = samples[#samples]
  local grew, threads_ok, fds_ok = 0, true, true
  for _, s in ipairs(samples) do
    grew = math.max(grew, s.rss_mb - warm.rss_mb)
    threads_ok = threads_ok and s.threads == warm.threads
    fds_ok = fds_ok and s.fds == warm.fds
  end
  print(string.format("  %s: %d iterations in %.1f s CPU; after warm-up RSS %.1f -> %.1f MB (max growth %.2f MB), "
                      .. "threads %d -> %d, fds %d -> %d", label, n, os.clock() - t0, warm.rss_mb, last.rss_mb, grew,
                      warm.threads, last.threads, warm.fds, last.fds))
  if not sanitized then
    check.ok(label .. ": resident memory flat after warm-up", grew < RSS_SLACK_MB,
             string.format("grew by %.2f MB (limit %d)", grew, RSS_SLACK_MB))
  end
  check.ok(label .. ": thread count flat", threads_ok, string.format("%d -> %d", warm.threads, last.threads))
  check.ok(label .. ": open file descriptors flat", fds_ok, string.format("%d -> %d", warm.fds, last.fds))
end

local tests = {}

function tests.training_steps()
  local model = moco.MoCo { arch = "resnet20", dim = 8, K = 32, bn_splits = 2, in_channels = 3, width = 0.25,
                            lr = 0.03, momentum = 0.9, weight_decay = 1e-4, seed = 1 }
  local g = moco.Generator(3)
  local n = math.floor(2000 * SCALE)
  local last_loss
  soak("training", n, function()
    local im_q, im_k = moco.randn({ 4, 3, 4, 4 }, g), moco.randn({ 4, 3, 4, 4 }, g)
    last_loss = model:step(im_q, im_k)
  end)
  check.ok("training: the loss stays finite over the soak", last_loss == last_loss and math.abs(last_loss) < 1e6,
           tostring(last_loss))
end

function tests.loader_epochs()
  local ds = data.ImageFolder(FIXTURES .. "/folder", { quiet = true })
  local aug = T.Compose { T.RandomResizedCrop(12), T.RandomHorizontalFlip(), T.ToTensor() }
  local loader = data.Loader(ds, { batch_size = 3, workers = 2, transform = T.TwoCrops(aug), drop_last = false })
  local batches = 0
  soak("loader epochs", math.floor(300 * SCALE), function()
    for im_q in loader:iter() do batches = batches + im_q:size(1) end
  end)
  loader:close()
  check.eq("loader epochs: every sample of every epoch came", batches, math.floor(300 * SCALE) * #ds)
  soak("loader create/close", math.floor(150 * SCALE), function(i)
    local l <close> = data.Loader(ds, { batch_size = 2, workers = 1 + i % 3, transform = aug, drop_last = false })
    l:next()
  end)
end

function tests.repl_evaluations()
  local dir = check.tmpdir()
  local n = math.floor(3000 * SCALE)
  local lines = {
    "function stat() collectgarbage() collectgarbage() local r, t for l in io.lines('/proc/self/status') do "
      .. "r = r or tonumber(l:match('^VmRSS:%s+(%d+)')) t = t or tonumber(l:match('^Threads:%s+(%d+)')) end "
      .. "print(string.format('STAT %d %d %d', r, t, #moco._io.listdir('/proc/self/fd'))) end",
  }
  for i = 1, n do
    local k = i % 4
    if k == 0 then
      lines[#lines + 1] = "x = moco.randn{16, 16}:matmul(moco.randn{16, 16}) x:sum()"
    elseif k == 1 then
      lines[#lines + 1] = "t = {} for j = 1, 200 do t[j] = tostring(j) end"
    elseif k == 2 then
      lines[#lines + 1] = "error('boom " .. i .. "')"  -- errors must not leak either
    else
      lines[#lines + 1] = "moco.transforms.Compose{moco.transforms.ToTensor()}"
    end
    if i == n // 5 or (i > n // 5 and i % (n // 5) == 0) then lines[#lines + 1] = "stat()" end
  end
  local input, output = dir .. "/in.lua", dir .. "/out.txt"
  check.write_file(input, table.concat(lines, "\n") .. "\n")
  local exe = arg and arg[-1] or "./moco-lua"
  local t0 = os.time()
  os.execute(string.format("'%s' < '%s' > '%s' 2>&1", exe, input, output))
  local stats, boom = {}, 0
  for line in io.lines(output) do
    local r, t, d = line:match("^STAT (%d+) (%d+) (%d+)")
    if r then stats[#stats + 1] = { rss_mb = tonumber(r) / 1024, threads = tonumber(t), fds = tonumber(d) } end
    if line:find("boom", 1, true) then boom = boom + 1 end
  end
  os.execute("rm -rf '" .. dir .. "'")
  check.ok("REPL: every error line was reported and the session went on", boom == n // 4, boom .. " of " .. n // 4)
  if #stats < 3 then
    check.ok("REPL: the session reported its resources", false, #stats .. " STAT lines")
    return
  end
  local warm, last, grew = stats[1], stats[#stats], 0
  for _, s in ipairs(stats) do grew = math.max(grew, s.rss_mb - warm.rss_mb) end
  print(string.format("  REPL: %d lines in %d s; after warm-up RSS %.1f -> %.1f MB (max growth %.2f MB), threads %d -> %d, "
                      .. "fds %d -> %d", n, os.time() - t0, warm.rss_mb, last.rss_mb, grew, warm.threads, last.threads,
                      warm.fds, last.fds))
  if not sanitized then
    check.ok("REPL: resident memory flat after warm-up", grew < RSS_SLACK_MB, string.format("grew by %.2f MB", grew))
  end
  check.ok("REPL: thread count flat", last.threads == warm.threads, warm.threads .. " -> " .. last.threads)
  check.ok("REPL: open file descriptors flat", last.fds == warm.fds, warm.fds .. " -> " .. last.fds)
end

check.run(tests)
