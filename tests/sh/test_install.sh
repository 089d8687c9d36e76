#!/bin/sh
# tests/sh/test_install.sh: `make install PREFIX=...` gives a moco-lua that finds its Lua
# modules and recipes from any directory.
cd "$(dirname "$0")/../.." || exit 1
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
fail=0
check() { # name, condition-exit-status, message
  if [ "$2" -eq 0 ]; then echo "PASS $1"; else echo "FAIL $1: $3"; fail=1; fi
}
make -s install PREFIX="$prefix" >/dev/null 2>&1
check "install runs" $? "make install PREFIX=$prefix failed"
[ -x "$prefix/bin/moco-lua" ]
check "binary installed" $? "no $prefix/bin/moco-lua"
out=$(cd / && "$prefix/bin/moco-lua" -e 'print(moco.nn.Linear(2, 3):num_parameters())' 2>&1)
[ "$out" = "9" ]
check "modules found from / after install" $? "got: $out"
[ -f "$prefix/share/moco-lua/recipes/quickstart.lua" ]
check "recipes installed" $? "no quickstart.lua under $prefix/share/moco-lua/recipes"
make -s uninstall PREFIX="$prefix" >/dev/null 2>&1 && [ ! -e "$prefix/bin/moco-lua" ]
check "uninstall removes it" $? "moco-lua still present"
exit $fail
