#!/bin/sh
# tests/sh/test_cli.sh: the moco-lua command line: options, scripts and their
# arguments, error reporting and exit statuses, stdin, -i, and finding the Lua
# modules from another directory.  Run from the repository root:
#   sh tests/sh/test_cli.sh
# Prints "PASS name" / "FAIL name: why"; exits non-zero if anything failed.

. "$(dirname "$0")/lib.sh"

# run CMD...: runs with stdin from $tmp/in (empty unless `given` wrote it);
# sets $rc, leaves stdout in $tmp/out and stderr in $tmp/err.
: >"$tmp/in"
run() {
  "$@" <"$tmp/in" >"$tmp/out" 2>"$tmp/err"
  rc=$?
  : >"$tmp/in"
}
given() { printf '%s\n' "$1" >"$tmp/in"; }
out_has() { grep -q -- "$1" "$tmp/out"; }
err_has() { grep -q -- "$1" "$tmp/err"; }
shown() { printf 'rc=%s stdout=[%s] stderr=[%s]' "$rc" "$(head -c 300 "$tmp/out")" "$(head -c 300 "$tmp/err")"; }

need_exe

run "$exe" -v
if [ "$rc" -eq 0 ] && grep -q '^moco-lua [0-9][0-9.]* (Lua 5\.4' "$tmp/out"; then pass "-v prints version"
else fail "-v prints version" "$(shown)"; fi

run "$exe" --help
if [ "$rc" -eq 0 ] && out_has '-i' && out_has '-e' && out_has 'usage'; then pass "--help exits 0 and lists -i, -e"
else fail "--help exits 0 and lists -i, -e" "$(shown)"; fi

run "$exe" -h
if [ "$rc" -eq 0 ] && out_has 'usage'; then pass "-h is --help"
else fail "-h is --help" "$(shown)"; fi

run "$exe" -e 'print(1+1)'
if [ "$rc" -eq 0 ] && [ "$(cat "$tmp/out")" = "2" ]; then pass "-e runs code"
else fail "-e runs code" "$(shown)"; fi

run "$exe" -e 'x = 20' -e 'print(x + 1)'
if [ "$rc" -eq 0 ] && [ "$(cat "$tmp/out")" = "21" ]; then pass "-e repeats in order"
else fail "-e repeats in order" "$(shown)"; fi

cat >"$tmp/args.lua" <<'EOF'
print(arg[0] == ARGV0, arg[1], arg[2], select("#", ...), ...)
print(arg[-1], arg[-2])
EOF
run "$exe" -e "ARGV0 = '$tmp/args.lua'" "$tmp/args.lua" one "two words"
expected=$(printf 'true\tone\ttwo words\t2\tone\ttwo words\nARGV0 = '"'$tmp/args.lua'"'\t-e')
if [ "$rc" -eq 0 ] && [ "$(cat "$tmp/out")" = "$expected" ]; then pass "script gets arg and ..."
else fail "script gets arg and ..." "$(shown)"; fi

run "$exe" "$tmp/args.lua" --option value
if [ "$rc" -eq 0 ] && out_has "	--option	value	2	--option	value"; then pass "options after the script go to it"
else fail "options after the script go to it" "$(shown)"; fi

run "$exe" -- "$tmp/args.lua" -v
if [ "$rc" -eq 0 ] && out_has "	-v	nil	1	-v" && ! out_has '^moco-lua'; then pass "-- ends options"
else fail "-- ends options" "$(shown)"; fi

printf 'local x = 1\nerror("bo" .. "om")\n' >"$tmp/err.lua"
run "$exe" "$tmp/err.lua"
if [ "$rc" -eq 1 ] && err_has "^moco-lua: $tmp/err.lua:2: boom" && ! err_has 'stack traceback' &&
   [ "$(wc -l <"$tmp/err")" -eq 1 ]; then
  pass "script error: exit 1, one line with file and line, no traceback"
else fail "script error: exit 1, one line with file and line, no traceback" "$(shown)"; fi

MOCO_DEBUG=1 run "$exe" "$tmp/err.lua"
if [ "$rc" -eq 1 ] && err_has "$tmp/err.lua:2: boom" && err_has 'stack traceback'; then
  pass "MOCO_DEBUG=1 adds the traceback"
else fail "MOCO_DEBUG=1 adds the traceback" "$(shown)"; fi

printf 'local t = nil\nprint(t.x)\n' >"$tmp/bug.lua"
run "$exe" "$tmp/bug.lua"
if [ "$rc" -eq 1 ] && err_has "$tmp/bug.lua:2: attempt to index a nil value" && ! err_has 'stack traceback'; then
  pass "runtime error in the user's script: its file and line, no traceback"
else fail "runtime error in the user's script: its file and line, no traceback" "$(shown)"; fi

# A check inside moco's modules: the message, without the module's file and line.
run "$exe" -e 'moco.nn.Conv2d(3, 4, 3, {strid = 1})'
if [ "$rc" -eq 1 ] && err_has "^moco-lua: nn.Conv2d: unknown option 'strid'" && ! err_has 'lua/moco/' &&
   ! err_has 'traceback' && [ "$(wc -l <"$tmp/err")" -eq 1 ]; then
  pass "library check: one clean line, no lua/moco/x.lua:NN: prefix"
else fail "library check: one clean line, no lua/moco/x.lua:NN: prefix" "$(shown)"; fi

run "$exe" -e 'moco.checkpoint.load("'"$tmp"'/none.safetensors")'
if [ "$rc" -eq 1 ] && err_has "^moco-lua: $tmp/none.safetensors: cannot open: No such file" && ! err_has 'traceback'; then
  pass "missing file: one line naming it"
else fail "missing file: one line naming it" "$(shown)"; fi

# A Lua VM error inside moco's own modules is a bug: it keeps its position and traceback.
run "$exe" -e 'moco.eval.standardize(5)'
if [ "$rc" -eq 1 ] && err_has 'lua/moco/eval.lua:[0-9]*: attempt to index a number value' && err_has 'stack traceback' &&
   err_has 'internal error of moco-lua'; then
  pass "internal error keeps its traceback"
else fail "internal error keeps its traceback" "$(shown)"; fi

printf 'x = = 1\n' >"$tmp/syntax.lua"
run "$exe" "$tmp/syntax.lua"
if [ "$rc" -eq 1 ] && err_has "syntax.lua:1:"; then pass "syntax error: exit 1"
else fail "syntax error: exit 1" "$(shown)"; fi

run "$exe" "$tmp/no-such-file.lua"
if [ "$rc" -eq 1 ] && err_has "cannot open"; then pass "missing script: exit 1"
else fail "missing script: exit 1" "$(shown)"; fi

run "$exe" -e 'error("from -e")' "$tmp/args.lua"
if [ "$rc" -eq 1 ] && err_has "from -e" && [ ! -s "$tmp/out" ]; then pass "-e error: exit 1, script not run"
else fail "-e error: exit 1, script not run" "$(shown)"; fi

run "$exe" --frobnicate
if [ "$rc" -eq 1 ] && err_has "frobnicate" && err_has "usage"; then pass "unknown option: exit 1 with usage"
else fail "unknown option: exit 1 with usage" "$(shown)"; fi

run "$exe" -e
if [ "$rc" -eq 1 ] && err_has "usage"; then pass "-e without code: exit 1"
else fail "-e without code: exit 1" "$(shown)"; fi

run "$exe" -e 'os.exit(3)'
if [ "$rc" -eq 3 ]; then pass "os.exit(3) exits 3"
else fail "os.exit(3) exits 3" "$(shown)"; fi

given 'print("from stdin", ...)'
run "$exe" - extra
if [ "$rc" -eq 0 ] && [ "$(cat "$tmp/out")" = "$(printf 'from stdin\textra')" ]; then pass "- reads the script from stdin"
else fail "- reads the script from stdin" "$(shown)"; fi

printf 'x = 21\n' >"$tmp/setx.lua"
given '=x * 2'
run "$exe" -i "$tmp/setx.lua"
if [ "$rc" -eq 0 ] && [ "$(cat "$tmp/out")" = "42" ]; then pass "-i runs the script then the REPL"
else fail "-i runs the script then the REPL" "$(shown)"; fi

given 'function f(x)
  return x + 1
end
f(41)'
run "$exe"
if [ "$rc" -eq 0 ] && [ "$(cat "$tmp/out")" = "42" ]; then pass "REPL from a pipe"
else fail "REPL from a pipe" "$(shown)"; fi

(cd "$tmp" && "$exe" -e 'assert(type(moco) == "table") print("ok")' >"$tmp/out" 2>"$tmp/err"); rc=$?
if [ "$rc" -eq 0 ] && out_has '^ok$'; then pass "runs from another directory"
else fail "runs from another directory" "$(shown)"; fi

ln -s "$exe" "$tmp/linked-moco-lua"
(cd / && "$tmp/linked-moco-lua" -e 'assert(type(moco) == "table") print("ok")' >"$tmp/out" 2>"$tmp/err"); rc=$?
if [ "$rc" -eq 0 ] && out_has '^ok$'; then pass "runs through a symlink"
else fail "runs through a symlink" "$(shown)"; fi

printf 'return "mine"\n' >"$tmp/mymod.lua"
export MOCO_LUA_PATH="$tmp/?.lua"
run "$exe" -e 'print((require "mymod"))'
unset MOCO_LUA_PATH
if [ "$rc" -eq 0 ] && [ "$(cat "$tmp/out")" = "mine" ]; then pass "MOCO_LUA_PATH is searched"
else fail "MOCO_LUA_PATH is searched" "$(shown)"; fi

run "$exe" -l string -e 'print(type(string))'
if [ "$rc" -eq 0 ] && [ "$(cat "$tmp/out")" = "table" ]; then pass "-l requires a library"
else fail "-l requires a library" "$(shown)"; fi

# Recipes by name, from any directory.
(cd "$tmp" && "$exe" run >"$tmp/out" 2>"$tmp/err"); rc=$?
if [ "$rc" -eq 0 ] && out_has '^  quickstart ' && out_has '^  moco_v2 ' && out_has '^  lincls '; then
  pass "moco-lua run lists the recipes"
else fail "moco-lua run lists the recipes" "$(shown)"; fi
(cd "$tmp" && "$exe" quickstart --help >"$tmp/out" 2>"$tmp/err"); rc=$?
if [ "$rc" -eq 0 ] && out_has '^usage: moco-lua quickstart' && out_has -- '--moco-k'; then
  pass "moco-lua quickstart --help finds the recipe"
else fail "moco-lua quickstart --help finds the recipe" "$(shown)"; fi
(cd "$tmp" && "$exe" run moco_v2 --help >"$tmp/out" 2>"$tmp/err"); rc=$?
if [ "$rc" -eq 0 ] && out_has '^usage: moco-lua run moco_v2'; then
  pass "moco-lua run moco_v2 --help"
else fail "moco-lua run moco_v2 --help" "$(shown)"; fi
(cd "$tmp" && "$exe" run no_such_recipe >"$tmp/out" 2>"$tmp/err"); rc=$?
if [ "$rc" -eq 1 ] && err_has "no recipe named 'no_such_recipe'" && err_has '^  quickstart '; then
  pass "an unknown recipe name lists the known ones"
else fail "an unknown recipe name lists the known ones" "$(shown)"; fi
printf 'print("the local file")\n' >"$tmp/quickstart"
(cd "$tmp" && "$exe" quickstart >"$tmp/out" 2>"$tmp/err"); rc=$?
if [ "$rc" -eq 0 ] && out_has '^the local file$'; then
  pass "a file in the current directory wins over a recipe of that name"
else fail "a file in the current directory wins over a recipe of that name" "$(shown)"; fi

# moco.finish_interrupt ends a script with 128 + signal by unwinding to main, which closes
# the Lua state: to-be-closed variables and finalizers run (loaders join their threads,
# files close); nothing after the call runs and no error is printed.
cat >"$tmp/finish.lua" <<'EOF'
moco.defer_interrupts(true)
kept = setmetatable({}, { __gc = function() io.stderr:write("finalized\n") end })
local pid = io.open("/proc/self/stat"):read("n")
os.execute("kill -TERM " .. pid)
print("pending", moco.interrupt_pending())
do
  local guard <close> = setmetatable({}, { __close = function() io.stderr:write("closed\n") end })
  moco.finish_interrupt()
end
print("not reached")
EOF
run "$exe" "$tmp/finish.lua"
if [ "$rc" -eq 143 ] && out_has '^pending	SIGTERM$' && ! out_has 'not reached' && err_has '^closed$' \
   && err_has '^finalized$' && ! err_has 'interrupted'; then
  pass "finish_interrupt exits 143 after closing the Lua state"
else fail "finish_interrupt exits 143 after closing the Lua state" "$(shown)"; fi
# A pcall that catches the error does not keep the script alive past its end.
sed 's/^  moco.finish_interrupt()$/  print("caught", pcall(moco.finish_interrupt))/' "$tmp/finish.lua" >"$tmp/caught.lua"
run "$exe" "$tmp/caught.lua"
if [ "$rc" -eq 143 ] && out_has 'caught	false' && err_has '^finalized$' && ! err_has 'interrupted'; then
  pass "finish_interrupt caught by a pcall still ends the script with 143"
else fail "finish_interrupt caught by a pcall still ends the script with 143" "$(shown)"; fi

finish
