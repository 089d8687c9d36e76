# moco-lua: build, dependencies, tests, benchmarks, install.
#
#   make            build ./moco-lua
#   make deps       install the Debian packages it needs, and those of the tests (as root), or
#                   print the apt-get line
#   make demo       the run-time packages + build + run the default demo (recipes/quickstart.lua)
#   make test       deps + build + run every test; ends with "N passed, N failed"
#   make test SANITIZE=1   the same suite built with ASan + UBSan, in build-asan/ (and build-ubsan/)
#   make test-portable     the ARCH=-march=x86-64 build and its kernel-fallback tests, in build-portable/
#   make fuzz [FUZZ_SECONDS=60]   every tests/fuzz/fuzz_*.c under libFuzzer (clang), in build-fuzz/
#   make bench      benchmarks (not part of make test)
#   make docs       regenerate docs/api.md from lua/moco/doc.lua
#   make install PREFIX=/usr/local
#   make clean

PREFIX  ?= /usr/local
CC      ?= cc
# Debian packages needed to build and run (see docs/architecture.md for why each).
DEB_PACKAGES = liblua5.4-dev libopenblas-dev libpng-dev libjpeg62-turbo-dev libedit-dev \
               zlib1g-dev pkg-config dataset-fashion-mnist libcairo2-dev libjansson-dev \
               libopenmpi-dev openmpi-bin libwebp-dev libgif-dev
PKGS    = lua5.4 libedit libpng zlib cairo jansson libwebp libwebpdemux
# Needed by the tests only: tests/sh/test_report.sh renders report.html in headless Chromium
# (a demo user does not need a browser: `make demo` installs DEB_PACKAGES alone).
TEST_PACKAGES = chromium

OPT     ?= -O2
# The build is for the machine it runs on (AVX2/AVX-512 and FMA where present); override with
# `make ARCH=-march=x86-64` for a portable binary.
ARCH    ?= -march=native
CFLAGS  ?= $(OPT) $(ARCH)
# Instrumentation for the sanitizer and fuzzing builds: their build trees (below) hold a
# build.mk that sets it, so any make run inside them (tests run `make install`) builds
# the same way.
SANFLAGS ?=
-include build.mk
CFLAGS  += $(SANFLAGS) -Wall -Wextra -std=gnu11 -pthread -Icore -Ilua
CFLAGS  += $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS  += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lopenblas -ljpeg -lgif -lpthread -lm -lutil

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
# Every fuzz target also runs in `make test`, as a replay of its regression corpus
# (tests/fuzz/replay.c as main, the normal compiler; see tests/fuzz/fuzz.h).
FUZZ_SRC := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_NAMES := $(FUZZ_SRC:tests/fuzz/fuzz_%.c=%)
TEST_BIN := $(TEST_SRC:tests/c/%.c=build/tests/%) $(FUZZ_NAMES:%=build/tests/test_fuzz_%)
# The binding without main(), for the fuzz targets that embed Lua.
BIND_LIB_OBJ := $(filter-out build/lua/main.o,$(BIND_OBJ))

.PHONY: all deps deps-run install-packages demo test test-portable fuzz bench install uninstall clean fixtures docs
all: moco-lua

build/libmoco.a: $(CORE_OBJ)
	@mkdir -p $(@D)
	$(AR) rcs $@ $^

# build.mk (only in the sanitizer and fuzzing trees) changes the flags: everything is rebuilt.
BUILD_MK := $(wildcard build.mk)

build/%.o: %.c $(BUILD_MK)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

build/core/dist.o build/core/dist_mpi.o build/lua/l_dist.o: CFLAGS += $(MPI_CFLAGS)

moco-lua: $(BIND_OBJ) build/libmoco.a $(BUILD_MK)
	$(CC) $(CFLAGS) -o $@ $(BIND_OBJ) build/libmoco.a $(LDLIBS)

build/tests/%: tests/c/%.c build/libmoco.a $(BUILD_MK)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -MMD -MP -Itests/c -o $@ $< build/libmoco.a $(LDLIBS)

build/tests/test_fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/replay.c $(BIND_LIB_OBJ) build/libmoco.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -MMD -MP -Itests/c -Itests/fuzz -D_GNU_SOURCE -o $@ $< tests/fuzz/replay.c $(BIND_LIB_OBJ) build/libmoco.a $(LDLIBS)

# libFuzzer binaries (only inside build-fuzz/, where SANFLAGS has -fsanitize=fuzzer-no-link).
build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(BIND_LIB_OBJ) build/libmoco.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -fsanitize=fuzzer -MMD -MP -Itests/fuzz -D_GNU_SOURCE -o $@ $< $(BIND_LIB_OBJ) build/libmoco.a $(LDLIBS)

# The compute kernels (the lead's; GCC vector builtins) are not what the fuzzers explore:
# the clang fuzzing build compiles them with KERNEL_CC (gcc), uninstrumented.
ifdef KERNEL_CC
build/core/nn/%.o build/core/gemm.o: override CC := $(KERNEL_CC)
build/core/nn/%.o build/core/gemm.o: override SANFLAGS :=
endif

-include $(CORE_OBJ:.o=.d) $(BIND_OBJ:.o=.d) $(TEST_BIN:=.d) $(FUZZ_NAMES:%=build/fuzz/fuzz_%.d)

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

# A build directory that mirrors the source tree through symbolic links, so the rules above
# build into <dir>/build and tests/run.sh runs there unchanged (./moco-lua, build/tests/,
# and moco-lua's own lookup of <exe dir>/lua all resolve inside it).  $(2): its build.mk.
define mirror_tree
	@mkdir -p $(1)
	@for d in core lua tests recipes docs Makefile README.md LICENSE; do [ -e $(1)/$$d ] || ln -s ../$$d $(1)/$$d; done
	@printf '%s\n' $(2) > $(1)/build.mk.new
	@cmp -s $(1)/build.mk.new $(1)/build.mk 2>/dev/null && rm $(1)/build.mk.new || mv $(1)/build.mk.new $(1)/build.mk
endef

# ASan + UBSan: any report ends the program (so the runner counts it); leaks in system
# libraries are suppressed (tests/sanitize/lsan.supp).
SAN_DIR   = build-asan
SAN_MK    = 'OPT = -O2 -g' \
            'SANFLAGS = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined'
SAN_ENV   = ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:detect_stack_use_after_return=0:allocator_may_return_null=1 \
            UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
            LSAN_OPTIONS=suppressions=$(CURDIR)/tests/sanitize/lsan.supp:print_suppressions=0 \
            MOCO_SANITIZE=1

# test_learning trains a model for 20 epochs (about 2 CPU-minutes); under ASan it takes
# more than 20, the rest of the suite about 3.  It runs with UBSan only (its own build
# in build-ubsan/), which keeps `make test SANITIZE=1` near 8 CPU-minutes; its memory
# accesses are those of test_moco and test_models, which ASan does check.  So does
# test_dist_recipes (recipes trained on 2 MPI ranks, about 3 minutes): its C paths are
# those of test_dist and test_shard, which run under ASan.
SAN_SLOW  = test_learning test_dist_recipes
UBSAN_DIR = build-ubsan
UBSAN_MK  = 'OPT = -O2 -g' 'SANFLAGS = -fsanitize=undefined -fno-sanitize-recover=undefined'

# The portable build (`make ARCH=-march=x86-64`: no AVX2 or AVX-512, so neither libmoco's
# own matrix kernel nor Winograd) in build-portable/: it must build, and the tests of the
# paths it swaps (OpenBLAS as the GEMM, the exact convolutions) must pass.  CI runs it.
PORT_DIR   = build-portable
PORT_MK    = 'ARCH = -march=x86-64'
PORT_TESTS = test_gemm test_nn test_layers test_models test_moco test_jacobian
test-portable: deps
	$(call mirror_tree,$(PORT_DIR),$(PORT_MK))
	@$(MAKE) --no-print-directory -C $(PORT_DIR) moco-lua build/tests/test_gemm build/tests/test_nn
	@cd $(PORT_DIR) && MOCO_TEST_ONLY="$(PORT_TESTS)" sh tests/run.sh

ifeq ($(SANITIZE),1)
test: deps
	$(call mirror_tree,$(SAN_DIR),$(SAN_MK))
	$(call mirror_tree,$(UBSAN_DIR),$(UBSAN_MK))
	@$(MAKE) --no-print-directory -C $(SAN_DIR) moco-lua $(TEST_BIN)
	@$(MAKE) --no-print-directory -C $(UBSAN_DIR) moco-lua
	@cd $(SAN_DIR) && $(SAN_ENV) MOCO_TEST_SKIP="$(SAN_SLOW)" sh tests/run.sh; asan=$$?; \
	 echo "UBSan only: $(SAN_SLOW)"; \
	 cd ../$(UBSAN_DIR) && $(SAN_ENV) MOCO_TEST_ONLY="$(SAN_SLOW)" sh tests/run.sh && exit $$asan
else
test: deps
	@$(MAKE) --no-print-directory moco-lua $(TEST_BIN)
	@sh tests/run.sh
endif

# libFuzzer (clang) with ASan + UBSan; each target runs FUZZ_SECONDS on a scratch copy of
# its corpus (new inputs land in build-fuzz/corpus/<name>, crashes in build-fuzz/crashes/).
FUZZ_SECONDS ?= 60
FUZZ_CC      ?= clang
FUZZ_DIR      = build-fuzz
FUZZ_FLAGS    = -rss_limit_mb=2048 -timeout=20 -max_len=65536 -print_final_stats=1
FUZZ_MK       = 'CC = $(FUZZ_CC)' 'KERNEL_CC = $(CC)' 'OPT = -O1 -g' \
                'SANFLAGS = -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined -DMOCO_FUZZING'
fuzz: deps
	$(call mirror_tree,$(FUZZ_DIR),$(FUZZ_MK))
	@$(MAKE) --no-print-directory -C $(FUZZ_DIR) $(FUZZ_NAMES:%=build/fuzz/fuzz_%)
	@cd $(FUZZ_DIR) && status=0 && timer=$$(command -v /usr/bin/time >/dev/null && echo "/usr/bin/time -a -o cpu.log -f %C:%U:%S"); \
	for t in $(FUZZ_NAMES); do \
	  mkdir -p corpus/$$t crashes && echo "fuzz_$$t: $(FUZZ_SECONDS) s" && \
	  $(SAN_ENV) $$timer ./build/fuzz/fuzz_$$t $(FUZZ_FLAGS) -max_total_time=$(FUZZ_SECONDS) \
	    -artifact_prefix=crashes/$$t- corpus/$$t tests/fuzz/corpus/$$t >fuzz_$$t.log 2>&1 \
	    || { status=1; echo "fuzz_$$t: FINDING, see $(FUZZ_DIR)/fuzz_$$t.log and $(FUZZ_DIR)/crashes/"; }; \
	  grep -a -E '^stat::number_of_executed_units|^#[0-9]+.*DONE' fuzz_$$t.log | tail -2; \
	  [ -z "$$timer" ] || tail -1 cpu.log | awk -F: '{printf "  CPU: %.1f min\n", ($$(NF-1) + $$NF) / 60}'; \
	done; exit $$status

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
	rm -rf build moco-lua build-asan build-ubsan build-fuzz build-portable
