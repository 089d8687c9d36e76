-- lua/moco/progress.lua: what long loops show while they run (moco.progress).
--
--   local bar = progress.Bar("kNN bank", 60000)      -- a count of items
--   bar:update(done [, "loss 6.21"])                 -- as often as you like
--   bar:finish()                                     -- the summary line
--   progress.print(line)                             -- a permanent line (clears the bar)
--   progress.set_quiet(true)                         -- --quiet: no bars, no periodic lines
--   progress.set_silent(true)                        -- MPI ranks but 0: nothing at all
--   progress.duration(3725) --> "1h02m"
--
-- Where it goes: on a terminal (stderr is a tty) a live one-line bar on stderr, redrawn at
-- most ten times a second and kept under 80 columns; when stdout is not a terminal (a log
-- file, a pipe, CI) plain lines on stdout instead, at most one every `every` seconds
-- (default 10) plus one at the end.  Both can happen at once (`moco-lua ... > log.txt` on a
-- terminal: the bar on the screen, the lines in the file).  progress.print clears a bar
-- that is showing before it prints, so permanent lines never mix with a half-drawn bar.
local moco = require "moco"
local is_finite = require("moco.util").is_finite

local progress = { quiet = false, silent = false }

function progress.set_quiet(q) progress.quiet = q and true or false end
function progress.set_silent(q) progress.silent = q and true or false end

-- Whether a live bar / periodic plain lines are shown (decided at each call: the streams
-- can be redirected between two runs in a REPL).
function progress.bar_enabled() return not (progress.quiet or progress.silent) and moco.isatty("stderr") end
function progress.lines_enabled() return not (progress.quiet or progress.silent) and not moco.isatty("stdout") end

-- "12.3s", "4m05s", "3h12m".
function progress.duration(s)
  if not is_finite(s) then return "?" end -- NaN or infinite: nothing is known yet
  if s >= 3600 then return string.format("%dh%02dm", s // 3600, (s % 3600) // 60) end
  if s >= 60 then return string.format("%dm%02ds", s // 60, math.floor(s % 60)) end
  return string.format("%.1fs", s)
end

local live = false -- a bar is drawn on stderr

function progress.clear()
  if live then
    io.stderr:write("\r\27[K")
    io.stderr:flush()
    live = false
  end
end

-- Draws text as the live bar (one line, at most 79 columns).
function progress.draw(text)
  if #text > 79 then text = text:sub(1, 79) end
  io.stderr:write("\r", text, "\27[K")
  io.stderr:flush()
  live = true
end

function progress.print(line)
  if progress.silent then return end
  progress.clear()
  io.stdout:write(line, "\n")
  io.stdout:flush()
end

-- "[=========>          ]" for a fraction in [0, 1].
function progress.gauge(fraction, width)
  width = width or 20
  fraction = math.max(0, math.min(1, fraction))
  local filled = math.floor(width * fraction)
  return "[" .. string.rep("=", filled) .. (filled < width and ">" or "") .. string.rep(" ", width - filled - 1) .. "]"
end

local Bar = {}
Bar.__index = Bar
Bar.__name = "moco.progress.Bar"
progress.Bar = Bar

-- A bar over `total` items.  opts: unit ("img"), every (seconds between plain lines, 10),
-- log (the plain-line printer, default progress.print).
setmetatable(Bar, { __call = function(_, label, total, opts)
  opts = opts or {}
  return setmetatable({
    label = label, total = total, unit = opts.unit or "img", every = opts.every or 10,
    log = opts.log or progress.print, start = moco.time(), last_draw = -1, last_line = moco.time(),
    bar = progress.bar_enabled(), lines = progress.lines_enabled(), done = 0,
  }, Bar)
end })

function Bar:text(done, extra)
  local elapsed = moco.time() - self.start
  local rate = done / math.max(elapsed, 1e-9)
  local left = rate > 0 and (self.total - done) / rate or 0 / 0
  return string.format("%s %s %d/%d %3d%% %.0f %s/s eta %s%s", self.label,
                       progress.gauge(self.total > 0 and done / self.total or 1, 20), done, self.total,
                       self.total > 0 and 100 * done // self.total or 100, rate, self.unit, progress.duration(left),
                       extra and ("  " .. extra) or "")
end

function Bar:update(done, extra)
  self.done = done
  local now = moco.time()
  if self.bar and now - self.last_draw >= 0.1 then
    self.last_draw = now
    progress.draw(self:text(done, extra))
  end
  if self.lines and now - self.last_line >= self.every and done < self.total then
    self.last_line = now
    self.log(self:text(done, extra))
  end
end

-- Clears the bar; in plain-line mode prints the final line ("kNN bank 60000 img in 25.1s, 2390 img/s").
function Bar:finish(summary)
  if self.bar then progress.clear() end
  if self.lines then
    local elapsed = moco.time() - self.start
    self.log(summary or string.format("%s %d %s in %s, %.0f %s/s", self.label, self.done, self.unit,
                                      progress.duration(elapsed), self.done / math.max(elapsed, 1e-9), self.unit))
  end
end

return progress
