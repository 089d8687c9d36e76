# tests/sh/lib.sh: what the shell tests share (sourced, not run: run.sh runs test_*.sh only).
# Every test starts with
#   . "$(dirname "$0")/lib.sh"
# which moves to the repository root and sets:
#   $exe                                            -- this build's moco-lua (absolute path)
#   $tmp                                            -- a new temporary directory, removed on exit
#   $mnt                                            -- empty; a test that mounts something there
#                                                      sets it, and it is unmounted on exit
#   pass NAME / fail NAME WHY / ok NAME STATUS WHY   -- "PASS name" / "FAIL name: why" lines;
#                                                      fail counts into $failed
#   need_exe                                        -- a FAIL and exit 1 when moco-lua is not built
#   data_of FILE                                    -- the md5 of a safetensors file's data section
#                                                      (every tensor's bytes, the header left out)
#   finish                                          -- exit: status 0 when nothing failed, else 1
#   make_cifar DIR RECORDS                          -- a synthetic CIFAR-10 in the official binary
#                                                      format: RECORDS images per file, labels 0..9
cd "$(dirname "$0")/../.." || exit 1
exe="$(pwd)/moco-lua"
tmp=$(mktemp -d) || exit 1
mnt=""
cleanup() {
  [ -n "$mnt" ] && umount "$mnt" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

failed=0
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; failed=$((failed + 1)); }
ok() { # name, status, why
  if [ "$2" -eq 0 ]; then pass "$1"; else fail "$1" "$3"; fi
}
need_exe() {
  if [ ! -x "$exe" ]; then fail "moco-lua exists" "$exe is not built"; exit 1; fi
}
finish() {
  if [ "$failed" -eq 0 ]; then exit 0; else exit 1; fi
}
data_of() {
  "$exe" -e "local f = assert(io.open('$1', 'rb')); local s = f:read('a'); local n = string.unpack('<I8', s)
             io.write((s:sub(9 + n):gsub('.', function(c) return string.format('%02x', c:byte()) end)))" | md5sum
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
