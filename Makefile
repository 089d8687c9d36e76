# moco-lua: build, dependencies, tests, benchmarks, install.
#
#   make            build ./moco-lua
#   make deps       install the Debian packages it needs, and those of the tests (as root), or
#                   print the apt-get line
#   make demo       the run-time packages + build + run the default demo (recipes/quickstart.lua)
#   make test       deps + build + run every test; ends with "N passed, N failed"
#   make bench      benchmarks (not part of make test)
#   make docs       regenerate docs/api.md from lua/moco/doc.lua
#   make install PREFIX=/usr/local
#   make clean

PREFIX  ?= /usr/local
CC      ?= cc
# Debian packages needed to build and run (see docs/architecture.md for why each).
DEB_PACKAGES = liblua5.4-dev libopenblas-dev libpng-dev libjpeg62-turbo-dev libedit-dev \
               zlib1g-dev pkg-config dataset-fashion-mnist libcairo2-dev libjansson-dev \
               libopenmpi-dev openmpi-bin
PKGS    = lua5.4 libedit libpng zlib cairo jansson
# Needed by the tests only: tests/sh/test_report.sh renders report.html in headless Chromium
# (a demo user does not need a browser: `make demo` installs DEB_PACKAGES alone).
TEST_PACKAGES = chromium

OPT     ?= -O2
# The build is for the machine it runs on (AVX2/AVX-512 and FMA where present); override with
# `make ARCH=-march=x86-64` for a portable binary.
ARCH    ?= -march=native
CFLAGS  ?= $(OPT) $(ARCH)
CFLAGS  += -Wall -Wextra -std=gnu11 -pthread -Icore -Ilua
CFLAGS  += $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS  += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lopenblas -ljpeg -lpthread -lm -lutil

# MPI (core/dist_mpi.c) when Open MPI's mpicc is present, unless `make MPI=0`; without it the
# build has the single-process backend only (core/dist.h).
MPI ?= 1
ifeq ($(MPI),1)
ifneq ($(shell command -v mpicc 2>/dev/null),)
MPI_CFLAGS := $(shell mpicc --showme:compile 2>/dev/null) -DMOCO_WITH_MPI
MPI_LIBS   := $(shell mpicc --showme:link 2>/dev/null)
endif
endif
LDLIBS  += $(MPI_LIBS)

CORE_SRC := $(sort $(wildcard core/*.c core/*/*.c))
CORE_OBJ := $(CORE_SRC:%.c=build/%.o)
BIND_SRC := $(sort $(wildcard lua/*.c))
BIND_OBJ := $(BIND_SRC:%.c=build/%.o)
TEST_SRC := $(sort $(wildcard tests/c/test_*.c))
TEST_BIN := $(TEST_SRC:tests/c/%.c=build/tests/%)

.PHONY: all deps deps-run install-packages demo test bench install uninstall clean fixtures docs
all: moco-lua

build/libmoco.a: $(CORE_OBJ)
	@mkdir -p $(@D)
	$(AR) rcs $@ $^

build/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

build/core/dist.o build/core/dist_mpi.o build/lua/l_dist.o: CFLAGS += $(MPI_CFLAGS)

moco-lua: $(BIND_OBJ) build/libmoco.a
	$(CC) $(CFLAGS) -o $@ $(BIND_OBJ) build/libmoco.a $(LDLIBS)

build/tests/%: tests/c/%.c build/libmoco.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -MMD -MP -Itests/c -o $@ $< build/libmoco.a $(LDLIBS)

-include $(CORE_OBJ:.o=.d) $(BIND_OBJ:.o=.d) $(TEST_BIN:=.d)

# Installs only what is missing; as a non-root user it prints the command instead.
deps:
	@$(MAKE) --no-print-directory install-packages PACKAGES="$(DEB_PACKAGES) $(TEST_PACKAGES)"

deps-run:
	@$(MAKE) --no-print-directory install-packages PACKAGES="$(DEB_PACKAGES)"

install-packages:
	@if ! command -v dpkg-query >/dev/null 2>&1; then \
	  echo "deps: not a Debian system; install the equivalents of: $(PACKAGES)"; exit 0; fi; \
	missing=""; for p in $(PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
	  echo "deps: installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	else \
	  echo "deps: missing packages; run:"; echo "  sudo apt-get install -y$$missing"; exit 1; \
	fi

demo: deps-run
	@$(MAKE) --no-print-directory moco-lua
	./moco-lua recipes/quickstart.lua

test: deps
	@$(MAKE) --no-print-directory moco-lua $(TEST_BIN)
	@sh tests/run.sh

bench: deps
	@$(MAKE) --no-print-directory moco-lua
	@sh tests/bench/run.sh $(BENCH_ARGS)

# Regenerates docs/api.md from lua/moco/doc.lua (the source help() reads too; make test
# fails when the two disagree).
docs: moco-lua
	./moco-lua -e 'io.write(moco.doc.markdown())' > docs/api.md.tmp && mv docs/api.md.tmp docs/api.md

# Regenerates the committed PyTorch reference fixtures.  Needs Debian's python3-torch,
# python3-torchvision and python3-skimage (CI does not: the outputs are committed).
PYTHON_REF ?= /usr/bin/python3
fixtures:
	@for f in tests/make_fixtures*.py tests/fixtures/npy/make.py; do \
	  [ -f "$$f" ] || continue; echo "$(PYTHON_REF) $$f"; $(PYTHON_REF) "$$f" || exit 1; done

# The executable, its Lua modules and recipes, the man page and the documentation.
install: moco-lua
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/moco-lua/lua/moco \
	           $(DESTDIR)$(PREFIX)/share/moco-lua/recipes $(DESTDIR)$(PREFIX)/share/man/man1 \
	           $(DESTDIR)$(PREFIX)/share/doc/moco-lua
	install -m 755 moco-lua $(DESTDIR)$(PREFIX)/bin/moco-lua
	install -m 644 lua/moco/*.lua $(DESTDIR)$(PREFIX)/share/moco-lua/lua/moco/
	install -m 644 recipes/*.lua $(DESTDIR)$(PREFIX)/share/moco-lua/recipes/
	install -m 644 docs/moco-lua.1 $(DESTDIR)$(PREFIX)/share/man/man1/moco-lua.1
	install -m 644 README.md docs/*.md $(DESTDIR)$(PREFIX)/share/doc/moco-lua/

uninstall:
	rm -rf $(DESTDIR)$(PREFIX)/bin/moco-lua $(DESTDIR)$(PREFIX)/share/moco-lua \
	       $(DESTDIR)$(PREFIX)/share/man/man1/moco-lua.1 $(DESTDIR)$(PREFIX)/share/doc/moco-lua

clean:
	rm -rf build moco-lua
