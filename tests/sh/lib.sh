# tests/sh/lib.sh: what the shell tests share (sourced, not run: run.sh runs test_*.sh only).
#   pass NAME / fail NAME WHY / ok NAME STATUS WHY   -- "PASS name" / "FAIL name: why" lines;
#                                                      fail counts into $failed
#   make_cifar DIR RECORDS                          -- a synthetic CIFAR-10 in the official binary
#                                                      format: RECORDS images per file, labels 0..9
failed=0
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; failed=$((failed + 1)); }
ok() { # name, status, why
  if [ "$2" -eq 0 ]; then pass "$1"; else fail "$1" "$3"; fi
}

make_cifar() {
  mkdir -p "$1"
  cat >"$1/.make.lua" <<'LUA'
  local dir, records = arg[1], tonumber(arg[2])
  local g = moco.Generator(5)
  local function write(name)
    local f = assert(io.open(dir .. "/" .. name, "wb"))
    for r = 1, records do
      local bytes = { string.char((r - 1) % 10) }
      for i = 1, 3072 do bytes[#bytes + 1] = string.char(g:random(256) - 1) end
      f:write(table.concat(bytes))
    end
    f:close()
  end
  for i = 1, 5 do write("data_batch_" .. i .. ".bin") end
  write("test_batch.bin")
LUA
  ./moco-lua "$1/.make.lua" "$1" "$2" && rm -f "$1/.make.lua"
}
