#!/bin/sh
# tests/sh/test_install.sh: `make install PREFIX=...` gives a moco-lua that finds its Lua
# modules and recipes from any directory.
. "$(dirname "$0")/lib.sh"
prefix="$tmp"
make -s install PREFIX="$prefix" >/dev/null 2>&1
ok "install runs" $? "make install PREFIX=$prefix failed"
[ -x "$prefix/bin/moco-lua" ]
ok "binary installed" $? "no $prefix/bin/moco-lua"
out=$(cd / && "$prefix/bin/moco-lua" -e 'print(moco.nn.Linear(2, 3):num_parameters())' 2>&1)
[ "$out" = "9" ]
ok "modules found from / after install" $? "got: $out"
[ -f "$prefix/share/moco-lua/recipes/quickstart.lua" ]
ok "recipes installed" $? "no quickstart.lua under $prefix/share/moco-lua/recipes"
out=$(cd / && "$prefix/bin/moco-lua" quickstart --help 2>&1 | head -n 1)
case "$out" in "usage: moco-lua quickstart "*) r=0 ;; *) r=1 ;; esac
ok "an installed recipe runs by its name from /" $r "got: $out"
[ -f "$prefix/share/man/man1/moco-lua.1" ]
ok "man page installed" $? "no $prefix/share/man/man1/moco-lua.1"
if command -v man >/dev/null 2>&1; then
  MANPATH="$prefix/share/man" man -P cat moco-lua 2>/dev/null | grep -q "RUN DIRECTORIES"
  ok "man moco-lua reads it" $? "man could not render it"
else
  # no man(1) here: check the page is well-formed roff that groff-free tools can read
  grep -q '^\.TH MOCO-LUA 1' "$prefix/share/man/man1/moco-lua.1"
  ok "man page has its header" $? "no .TH line"
fi
[ -f "$prefix/share/doc/moco-lua/tutorial.md" ] && [ -f "$prefix/share/doc/moco-lua/api.md" ] && [ -f "$prefix/share/doc/moco-lua/README.md" ]
ok "documentation installed" $? "$(ls "$prefix/share/doc/moco-lua" 2>&1)"
make -s uninstall PREFIX="$prefix" >/dev/null 2>&1 && [ ! -e "$prefix/bin/moco-lua" ] &&
  [ ! -e "$prefix/share/man/man1/moco-lua.1" ] && [ ! -e "$prefix/share/doc/moco-lua" ]
ok "uninstall removes it" $? "moco-lua still present"
finish
