# moco-lua: build, dependencies, tests, benchmarks, install.
#
#   make            build ./moco-lua
#   make deps       install the Debian packages it needs (as root), or print the apt-get line
#   make demo       deps + build + run the default demo (recipes/quickstart.lua)
#   make test       deps + build + run every test; ends with "N passed, N failed"
#   make bench      benchmarks (not part of make test)
#   make install PREFIX=/usr/local
#   make clean

PREFIX  ?= /usr/local
CC      ?= cc
# Debian packages needed to build and run (see docs/architecture.md for why each).
DEB_PACKAGES = liblua5.4-dev libopenblas-dev libpng-dev libjpeg62-turbo-dev libedit-dev \
               zlib1g-dev pkg-config dataset-fashion-mnist libcairo2-dev libjansson-dev \
               libopenmpi-dev openmpi-bin
PKGS    = lua5.4 libedit libpng zlib cairo jansson

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

.PHONY: all deps demo test bench install uninstall clean fixtures
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
	@if ! command -v dpkg-query >/dev/null 2>&1; then \
	  echo "deps: not a Debian system; install the equivalents of: $(DEB_PACKAGES)"; exit 0; fi; \
	missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
	  echo "deps: installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	else \
	  echo "deps: missing packages; run:"; echo "  sudo apt-get install -y$$missing"; exit 1; \
	fi

demo: deps
	@$(MAKE) --no-print-directory moco-lua
	./moco-lua recipes/quickstart.lua

test: deps
	@$(MAKE) --no-print-directory moco-lua $(TEST_BIN)
	@sh tests/run.sh

bench: deps
	@$(MAKE) --no-print-directory moco-lua
	@sh tests/bench/run.sh $(BENCH_ARGS)

# Regenerates the committed PyTorch reference fixtures.  Needs Debian's python3-torch,
# python3-torchvision and python3-skimage (CI does not: the outputs are committed).
PYTHON_REF ?= /usr/bin/python3
fixtures:
	@for f in tests/make_fixtures*.py tests/fixtures/npy/make.py; do \
	  [ -f "$$f" ] || continue; echo "$(PYTHON_REF) $$f"; $(PYTHON_REF) "$$f" || exit 1; done

install: moco-lua
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/moco-lua/lua/moco \
	           $(DESTDIR)$(PREFIX)/share/moco-lua/recipes
	install -m 755 moco-lua $(DESTDIR)$(PREFIX)/bin/moco-lua
	install -m 644 lua/moco/*.lua $(DESTDIR)$(PREFIX)/share/moco-lua/lua/moco/
	install -m 644 recipes/*.lua $(DESTDIR)$(PREFIX)/share/moco-lua/recipes/

uninstall:
	rm -rf $(DESTDIR)$(PREFIX)/bin/moco-lua $(DESTDIR)$(PREFIX)/share/moco-lua

clean:
	rm -rf build moco-lua
