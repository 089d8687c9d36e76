-- tests/lua/test_shard.lua: data.Loader's shard = {rank, count} option, seen from Lua: the
-- ranks' batches, interleaved, are bitwise the batches of one loader with batch_size B*N
-- (indices, labels and both random crops), #loader agrees on every rank, and bad shard
-- options give one error naming the option.
package.path = "tests/lua/?.lua;" .. package.path
local check = require "check"
local moco = require "moco"
local data, T = moco.data, moco.transforms

local tmpdir = check.tmpdir()

-- An IDX pair of n 6x6 gray images: pixel (y, x) of image i is (i * 13 + y * 6 + x * 5) % 256.
local N_SAMPLES = 23
local function write_idx(n)
  local img = { string.pack(">I4I4I4I4", 0x803, n, 6, 6) }
  local lbl = { string.pack(">I4I4", 0x801, n) }
  for i = 0, n - 1 do
    for y = 0, 5 do
      for x = 0, 5 do img[#img + 1] = string.char((i * 13 + y * 6 + x * 5) % 256) end
    end
    lbl[#lbl + 1] = string.char(i % 10)
  end
  check.write_file(tmpdir .. "/img.idx", table.concat(img))
  check.write_file(tmpdir .. "/lbl.idx", table.concat(lbl))
  return data.IDX(tmpdir .. "/img.idx", tmpdir .. "/lbl.idx")
end

local function aug()
  return T.TwoCrops(T.Compose { T.RandomResizedCrop(4, { scale = { 0.3, 1.0 } }), T.RandomHorizontalFlip(),
                                T.ToTensor() })
end

-- One epoch of `loader`: rows[k] = {index, batch (1-based), print}, in order.
local function epoch_rows(loader)
  local rows, b = {}, 0
  for q, k, labels, indices in loader:iter() do
    b = b + 1
    for i = 1, labels:numel() do rows[#rows + 1] = { indices[i], b, check.fingerprint(q[i], k[i], labels[i], indices[i]) } end
  end
  return rows, b
end

local tests = {}

function tests.shards_interleave_to_one_loader()
  local ds = write_idx(N_SAMPLES)
  local n = #ds
  for _, N in ipairs({ 2, 3 }) do
    for _, B in ipairs({ 2, 3 }) do
      for _, shuffle in ipairs({ false, true }) do
        for _, drop_last in ipairs({ false, true }) do
          local G = B * N
          local name = string.format("%d ranks x batch %d, shuffle %s, drop_last %s", N, B, shuffle, drop_last)
          local want = drop_last and n // G or (n + G - 1) // G
          local function opts(batch_size, workers, shard)
            return { transform = aug(), shuffle = shuffle, drop_last = drop_last, seed = 5, batch_size = batch_size,
                     workers = workers, shard = shard }
          end
          local single <close> = data.Loader(ds, opts(G, 1))
          local ranks = {}
          for r = 0, N - 1 do ranks[r] = data.Loader(ds, opts(B, r % 2, { rank = r, count = N })) end
          local lens_ok = #single == want
          for r = 0, N - 1 do lens_ok = lens_ok and #ranks[r] == want end
          check.ok(name .. ": #loader is " .. want .. " on every rank", lens_ok,
                   string.format("single %d, rank 0 %d", #single, #ranks[0]))
          local bad, why = 0, ""
          for epoch = 1, 2 do
            local ref, ref_batches = epoch_rows(single)
            local seen = {}
            for r = 0, N - 1 do
              local got, batches = epoch_rows(ranks[r])
              if batches ~= want or ref_batches ~= want then
                bad, why = bad + 1, string.format("rank %d: %d batches, single %d", r, batches, ref_batches)
              end
              local j, last_b = 0, 0
              for _, row in ipairs(got) do
                local b = row[2]
                if b ~= last_b then j, last_b = 0, b end
                local p = (b - 1) * G + r + N * j
                local q = p % n
                local want_row = ref[q + 1]
                if not want_row or want_row[3] ~= row[3] or (p < n and want_row[2] ~= b) then
                  if bad == 0 then
                    why = string.format("epoch %d rank %d batch %d row %d: index %s, single's position %d: %s",
                                        epoch, r, b, j, row[1], q, want_row and want_row[1] or "none")
                  end
                  bad = bad + 1
                end
                seen[p] = true
                j = j + 1
              end
            end
            for q = 0, #ref - 1 do
              if not seen[q] then bad, why = bad + 1, "the single loader's position " .. q .. " is on no rank" end
            end
          end
          check.ok(name .. ": interleaved, the batches of one loader of " .. G .. ", 2 epochs", bad == 0,
                   bad .. " bad rows; " .. why)
          for r = 0, N - 1 do ranks[r]:close() end
        end
      end
    end
  end
end

function tests.bad_shard_options()
  local ds = write_idx(N_SAMPLES)
  local bad = {
    { rank = 2, count = 2 }, { rank = -1, count = 2 }, { rank = 0, count = 0 }, { rank = 0.5, count = 2 },
    { rank = 0 }, { rank = 0, count = 2, size = 1 }, "rank 0",
  }
  for _, shard in ipairs(bad) do
    local desc = type(shard) == "table" and string.format("{rank = %s, count = %s%s}", tostring(shard.rank),
                                                           tostring(shard.count), shard.size and ", size" or "")
                 or shard
    check.raises("data.Loader refuses shard = " .. desc, "data.Loader: option shard must be {rank = r, count = n}",
                 data.Loader, ds, { batch_size = 2, shard = shard })
  end
  check.raises("drop_last with fewer samples than batch_size x count", "fewer than batch_size 4 times 6 shards",
               data.Loader, ds, { batch_size = 4, shard = { rank = 0, count = 6 } })
  local one <close> = data.Loader(ds, { batch_size = 2, drop_last = false, shard = { rank = 0, count = 1 } })
  check.eq("shard = {rank = 0, count = 1} is the whole dataset", #one, 12)
end

check.run(tests)
