# bertpipe — top-level build.
#
#   make                 every stage into bin/ (-Wall -Wextra -Werror)
#   make test            sanitizer build (ASan+UBSan), C unit tests, fuzz regressions, bats; ends "N passed, N failed"
#   make fuzz FUZZ_SECONDS=N   every libFuzzer harness for N seconds (clang); fails on any finding
#   make bench           every benchmark (scripts/bench-*)
#   make install PREFIX=/usr/local [DESTDIR=...]   never runs scripts/setup (see docs/tool.md)
#   make man             the man pages into build/man/ (also part of make)
#
# Sources are found by convention, so adding a file never means editing this:
#   common/LAYER/*.c     -> build/libbertpipe.a           (the shared library, one folder per layer)
#   common/LAYER/*.cu    -> build/libbertpipe_cuda.a      (only when nvcc exists)
#   common/LAYER/*_plugin.c -> build/lib/libbertpipe_NAME.so (dlopened at run time: the MPI one only when mpicc exists)
#   stages/NAME.c        -> bin/NAME
#   tests/unit/test_*.c  -> build/tests/test_*            (TAP on stdout)
#   tests/tools/*.c      -> build/tools/*                 (helpers for tests and parity runs)
#   tests/bench/*.c      -> build/bench/*
#   the stages + PIPELINES + plot -> build/man/bertpipe-NAME.1, build/completion/bertpipe
#   tests/fuzz/fuzz_*.c  -> build/fuzz/fuzz_*        (libFuzzer harnesses, clang; the library rebuilt for them)

PREFIX   ?= /usr/local
CC       ?= cc
ARCH     ?= -march=native
OPT      ?= -O2
NVCC     ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
PKGS      = libzmq msgpack libutf8proc libarchive openblas jansson zlib

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
# Every stage's --version line says the VERSION file's value, compiled in (stage/stage.c).
VERSION_DEF := -DBP_VERSION='"$(shell cat VERSION)"'
# oneDNN (Debian libdnnl-dev, no pkg-config file) gives the cpu backend its bf16 products; a build
# without it still works and says so when --precision bf16 asks for them.
DNNL_H     ?= $(firstword $(wildcard /usr/include/oneapi/dnnl/dnnl.h /usr/local/include/oneapi/dnnl/dnnl.h))
ifneq ($(DNNL_H),)
DNNL_DEFS   = -DBP_HAVE_DNNL=1
DNNL_LIBS   = -ldnnl -lgomp
endif
# -fno-trapping-math: nothing here reads floating-point exception flags, and without it GCC will
# not if-convert the element-wise loops (GELU, softmax, the gates) on a CPU without AVX-512's masks:
# they stayed scalar on AVX2, 5-20x slower. It changes no computed value.
CFLAGS_ALL  = -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter \
              -g $(OPT) $(ARCH) -fno-math-errno -fno-trapping-math -Icommon $(PKG_CFLAGS) $(VERSION_DEF) $(DNNL_DEFS) $(CFLAGS)
LDLIBS_ALL  = $(PKG_LIBS) $(DNNL_LIBS) -lm -lpthread -ldl $(LDLIBS)

# The test build also compiles in fault injection (backend/fault.h, BERTPIPE_FAULT); bin/ never has it.
SAN_FLAGS   = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined -DBP_FAULT_INJECTION

# A plugin (common/LAYER/*_plugin.c) is a shared object of its own, never in the library.
PLUGIN_SRC  := $(sort $(wildcard common/*/*_plugin.c))
COMMON_SRC  := $(filter-out $(PLUGIN_SRC),$(sort $(wildcard common/*/*.c)))
COMMON_HDR  := $(sort $(wildcard common/*/*.h))
CUDA_SRC    := $(sort $(wildcard common/*/*.cu))
STAGE_SRC   := $(sort $(wildcard stages/*.c))
TEST_SRC    := $(sort $(wildcard tests/unit/test_*.c))
TOOL_SRC    := $(sort $(wildcard tests/tools/*.c))
BENCH_SRC   := $(sort $(wildcard tests/bench/*.c))

STAGES      := $(patsubst stages/%.c,bin/%,$(STAGE_SRC))
SAN_STAGES  := $(patsubst stages/%.c,build/san/bin/%,$(STAGE_SRC))
TESTS       := $(patsubst tests/unit/%.c,build/san/tests/%,$(TEST_SRC))
TOOLS       := $(patsubst tests/tools/%.c,build/tools/%,$(TOOL_SRC))
BENCHES     := $(patsubst tests/bench/%.c,build/bench/%,$(BENCH_SRC))

# CUDA: compiled when nvcc exists, skipped with a message when it does not.
ifneq ($(strip $(NVCC))$(strip $(CUDA_SRC)),)
ifneq ($(strip $(CUDA_SRC)),)
ifneq ($(strip $(NVCC)),)
CUDA_HOME   ?= $(patsubst %/bin/nvcc,%,$(NVCC))
CUDA_LIB     = build/libbertpipe_cuda.a
CUDA_LDLIBS  = -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublas -lcudart -lstdc++
CUDA_DEFS    = -DBP_HAVE_CUDA=1
NVCC_FLAGS  ?= -O3 -std=c++17 -Icommon -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
               -Xcompiler -Wall,-Wextra,-Werror,-Wno-unused-parameter,-fPIC --Werror all-warnings
endif
endif
endif

# MPI: train's data parallelism lives in a plugin train dlopens only under a launcher
# (common/dist/dist.h), so no stage links libmpi; built when mpicc exists, skipped with a message
# when it does not.
MPICC       ?= $(shell command -v mpicc 2>/dev/null)
ifneq ($(strip $(MPICC)),)
MPI_PLUGIN   = build/lib/libbertpipe_mpi.so
MPI_PLUGINS  = $(MPI_PLUGIN) build/san/lib/libbertpipe_mpi.so
endif
ifneq ($(strip $(NVCC)),)
ifneq ($(wildcard $(CUDA_HOME)/include/nccl.h),)
CUDA_LDLIBS += -lnccl
NVCC_FLAGS  += -DBP_HAVE_NCCL=1
endif
endif

# The one command, its man pages and its bash completion (docs/tool.md).
PIPELINES   := sst squad predict-sst predict-squad
STAGE_MAN   := $(patsubst stages/%.c,build/man/bertpipe-%.1,$(STAGE_SRC))
PIPE_MAN    := $(patsubst %,build/man/bertpipe-%.1,$(PIPELINES))
MAN_PAGES   := build/man/bertpipe.1 $(STAGE_MAN) $(PIPE_MAN) build/man/bertpipe-plot.1
COMPLETION  := build/completion/bertpipe
TOOL_FILES  := bin/bertpipe $(MAN_PAGES) $(COMPLETION)

.PHONY: all deps test test-gpu bench clean install uninstall man san cuda-note mpi-note fuzz fuzz-build
all: deps cuda-note mpi-note $(STAGES) $(MPI_PLUGINS) $(TOOLS) $(BENCHES) $(TOOL_FILES)

deps:
	@scripts/setup

cuda-note:
ifeq ($(strip $(NVCC)),)
	@echo "make: nvcc not found: CUDA backend skipped (CPU only)" >&2
endif

mpi-note:
ifeq ($(strip $(MPICC)),)
	@echo "make: mpicc not found: the MPI plugin (data-parallel train) skipped (scripts/setup installs libopenmpi-dev)" >&2
endif

# ---- the library ----------------------------------------------------------
# Objects mirror the layer folders (build/obj/model/bert.o).
build/obj/%.o: common/%.c $(COMMON_HDR)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) $(CUDA_DEFS) -c $< -o $@
build/san/obj/%.o: common/%.c $(COMMON_HDR)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) $(SAN_FLAGS) $(CUDA_DEFS) -c $< -o $@
build/cuda/%.o: common/%.cu $(COMMON_HDR)
	@mkdir -p $(@D)
	$(NVCC) $(NVCC_FLAGS) -c $< -o $@

# A new VERSION changes the one object that prints it.
build/obj/stage/stage.o build/san/obj/stage/stage.o build/fuzz/obj/stage/stage.o: VERSION

build/libbertpipe.a: $(patsubst common/%.c,build/obj/%.o,$(COMMON_SRC))
	@rm -f $@; ar rcs $@ $^
build/san/libbertpipe.a: $(patsubst common/%.c,build/san/obj/%.o,$(COMMON_SRC))
	@rm -f $@; ar rcs $@ $^
build/libbertpipe_cuda.a: $(patsubst common/%.cu,build/cuda/%.o,$(CUDA_SRC))
	@rm -f $@; ar rcs $@ $^

# The plugin: position-independent, the library's headers, linked against libmpi (and only it).
build/lib/libbertpipe_mpi.so: common/dist/mpi_plugin.c common/dist/dist.h common/base/log.h
	@mkdir -p $(@D)
	$(MPICC) -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wno-unused-parameter -g -O2 -fPIC -shared -Icommon $< -o $@
# The sanitizer build's stages (build/san/bin) find it at build/san/lib.
build/san/lib/libbertpipe_mpi.so: build/lib/libbertpipe_mpi.so
	@mkdir -p $(@D)
	ln -sf ../../lib/libbertpipe_mpi.so $@

LIB      = build/libbertpipe.a $(CUDA_LIB)
SAN_LIB  = build/san/libbertpipe.a $(CUDA_LIB)

# ---- executables ------------------------------------------------------------
bin/%: stages/%.c $(LIB) $(COMMON_HDR) | bin
	$(CC) $(CFLAGS_ALL) $(CUDA_DEFS) $< $(LIB) $(LDLIBS_ALL) $(CUDA_LDLIBS) -o $@
build/san/bin/%: stages/%.c $(SAN_LIB) $(COMMON_HDR) | build/san/bin
	$(CC) $(CFLAGS_ALL) $(SAN_FLAGS) $(CUDA_DEFS) $< $(SAN_LIB) $(LDLIBS_ALL) $(CUDA_LDLIBS) -o $@
build/san/tests/%: tests/unit/%.c $(SAN_LIB) $(COMMON_HDR) $(wildcard tests/unit/*.h) | build/san/tests
	$(CC) $(CFLAGS_ALL) $(SAN_FLAGS) $(CUDA_DEFS) -Itests/unit $< $(SAN_LIB) $(LDLIBS_ALL) $(CUDA_LDLIBS) -o $@
build/tools/%: tests/tools/%.c $(LIB) $(COMMON_HDR) | build/tools
	$(CC) $(CFLAGS_ALL) $(CUDA_DEFS) $< $(LIB) $(LDLIBS_ALL) $(CUDA_LDLIBS) -o $@
build/bench/%: tests/bench/%.c $(LIB) $(COMMON_HDR) | build/bench
	$(CC) $(CFLAGS_ALL) $(CUDA_DEFS) $< $(LIB) $(LDLIBS_ALL) $(CUDA_LDLIBS) -o $@

bin build/san/bin build/san/tests build/tools build/bench build/man build/completion:
	@mkdir -p $@

# ---- the bertpipe command, man pages, completion -----------------------------------------
# In the tree bin/bertpipe is a link to scripts/bertpipe: it finds the repository from there.
bin/bertpipe: scripts/bertpipe | bin
	ln -sf ../scripts/bertpipe $@

# Pages are made from each command's --help and docs/ (scripts/make-man), so they change
# whenever those do; written to a temporary name first so a failed run leaves no page.
MAN_DEPS = scripts/make-man scripts/bertpipe VERSION docs/tool.md docs/stages.md
man: $(MAN_PAGES)
$(STAGE_MAN): build/man/bertpipe-%.1: bin/% $(MAN_DEPS) | build/man
	scripts/make-man bertpipe-$* bin/$* >$@.tmp && mv $@.tmp $@
$(PIPE_MAN): build/man/bertpipe-%.1: pipelines/% pipelines/lib.sh $(MAN_DEPS) | build/man
	scripts/make-man bertpipe-$* pipelines/$* >$@.tmp && mv $@.tmp $@
build/man/bertpipe-plot.1: scripts/plot $(MAN_DEPS) | build/man
	scripts/make-man bertpipe-plot scripts/plot >$@.tmp && mv $@.tmp $@
build/man/bertpipe.1: $(STAGES) $(MAN_DEPS) | build/man
	scripts/make-man bertpipe scripts/bertpipe >$@.tmp && mv $@.tmp $@
$(COMPLETION): scripts/make-completion scripts/bertpipe bin/bertpipe $(STAGES) scripts/plot \
               $(addprefix pipelines/,$(PIPELINES)) | build/completion
	scripts/make-completion bin/bertpipe >$@.tmp && mv $@.tmp $@

san: deps $(SAN_STAGES) $(TESTS) $(MPI_PLUGINS)

# ---- fuzzing --------------------------------------------------------------------
# Each harness calls one reader in-process on libFuzzer's bytes (tests/fuzz/fuzz_common.h). The
# library is compiled again with clang, ASan, UBSan and coverage so the fuzzer sees inside it.
# Seeds come from our fixtures (tests/fuzz/make_seeds.py); inputs that once crashed live in
# tests/fuzz/regressions/HARNESS/ and are replayed by `make test` (scripts/run-tests).
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_SRC     := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZERS      := $(patsubst tests/fuzz/%.c,build/fuzz/%,$(FUZZ_SRC))
HAVE_FUZZ_CC := $(shell command -v $(FUZZ_CC) 2>/dev/null)
FUZZ_CFLAGS   = -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter -g -O1 \
                -fno-omit-frame-pointer -Icommon $(PKG_CFLAGS) $(VERSION_DEF) -fsanitize=address,undefined -fno-sanitize-recover=undefined

build/fuzz/obj/%.o: common/%.c $(COMMON_HDR)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@
build/fuzz/libbertpipe.a: $(patsubst common/%.c,build/fuzz/obj/%.o,$(COMMON_SRC))
	@rm -f $@; ar rcs $@ $^
build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_common.h build/fuzz/libbertpipe.a $(COMMON_HDR)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -Itests/fuzz $< build/fuzz/libbertpipe.a $(LDLIBS_ALL) -o $@
build/fuzz/seeds.stamp: tests/fuzz/make_seeds.py $(FUZZ_SRC) $(shell find tests/fixtures proto/vectors -type f 2>/dev/null)
	@rm -rf build/fuzz/seeds && python3 tests/fuzz/make_seeds.py build/fuzz/seeds >/dev/null && touch $@

ifneq ($(strip $(HAVE_FUZZ_CC)),)
fuzz-build: $(FUZZERS) build/fuzz/seeds.stamp
else
fuzz-build:
	@echo "make: $(FUZZ_CC) not found: fuzz harnesses skipped (scripts/setup installs clang)" >&2
endif

fuzz: fuzz-build
	@scripts/fuzz run $(FUZZ_SECONDS)

# ---- tests --------------------------------------------------------------------
# scripts/run-tests runs the unit tests, the fuzz regressions and bats (all TAP) and prints
# the totals line.
test: all san fuzz-build
	@scripts/run-tests

test-gpu: all
	@scripts/run-tests --gpu

# ---- benchmarks ----------------------------------------------------------------
bench: all
	@for b in scripts/bench-*; do echo "== $$b"; $$b || exit 1; done

bench-%: all
	@scripts/bench-$*

parity-%: all
	@scripts/parity-$*

# ---- install --------------------------------------------------------------------------------
# PREFIX/bin gets bertpipe and the stages as bertpipe-NAME (no generic names on PATH: eval is
# a shell builtin, batch is at(1)'s). PREFIX/lib/bertpipe is the dispatcher's home, shaped
# like the tree so pipelines/lib.sh needs nothing new: bin/NAME links to each stage,
# pipelines/ with lib.sh and the embedded default, scripts/plot, VERSION. It builds what it
# needs but never runs scripts/setup (no apt): run that, or make, first.
BINDIR  = $(PREFIX)/bin
LIBDIR  = $(PREFIX)/lib/bertpipe
MANDIR  = $(PREFIX)/share/man/man1
COMPDIR = $(PREFIX)/share/bash-completion/completions
STAGE_NAMES := $(patsubst stages/%.c,%,$(STAGE_SRC))
install: cuda-note mpi-note $(STAGES) $(MPI_PLUGIN) $(MAN_PAGES) $(COMPLETION)
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR)/bin $(DESTDIR)$(LIBDIR)/scripts \
	    $(DESTDIR)$(LIBDIR)/pipelines/default $(DESTDIR)$(MANDIR) $(DESTDIR)$(COMPDIR)
	install -m 755 scripts/bertpipe $(DESTDIR)$(BINDIR)/bertpipe
	install -m 644 VERSION $(DESTDIR)$(LIBDIR)/VERSION
	for s in $(STAGE_NAMES); do \
	  install -m 755 bin/$$s $(DESTDIR)$(BINDIR)/bertpipe-$$s && \
	  ln -sfr $(DESTDIR)$(BINDIR)/bertpipe-$$s $(DESTDIR)$(LIBDIR)/bin/$$s || exit 1; \
	done
	install -m 755 $(addprefix pipelines/,$(PIPELINES)) $(DESTDIR)$(LIBDIR)/pipelines/
	install -m 644 pipelines/lib.sh $(DESTDIR)$(LIBDIR)/pipelines/
	install -m 644 pipelines/default/* $(DESTDIR)$(LIBDIR)/pipelines/default/
	install -m 755 scripts/plot $(DESTDIR)$(LIBDIR)/scripts/
	$(if $(MPI_PLUGIN),install -m 755 $(MPI_PLUGIN) $(DESTDIR)$(LIBDIR)/)
	install -m 644 $(MAN_PAGES) $(DESTDIR)$(MANDIR)/
	install -m 644 $(COMPLETION) $(DESTDIR)$(COMPDIR)/bertpipe
	for c in $(STAGE_NAMES) $(PIPELINES) plot; do ln -sf bertpipe $(DESTDIR)$(COMPDIR)/bertpipe-$$c || exit 1; done

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/bertpipe $(addprefix $(DESTDIR)$(BINDIR)/bertpipe-,$(STAGE_NAMES)) \
	    $(addprefix $(DESTDIR)$(MANDIR)/,$(notdir $(MAN_PAGES))) $(DESTDIR)$(COMPDIR)/bertpipe \
	    $(addprefix $(DESTDIR)$(COMPDIR)/bertpipe-,$(STAGE_NAMES) $(PIPELINES) plot)
	rm -rf $(DESTDIR)$(LIBDIR)

clean:
	rm -rf bin build
-include tests/gpu/gpu.mk
