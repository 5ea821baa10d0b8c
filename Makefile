# bertpipe — top-level build.
#
#   make                 every stage into bin/ (-Wall -Wextra -Werror)
#   make test            sanitizer build (ASan+UBSan), C unit tests, bats; ends "N passed, N failed"
#   make bench           every benchmark (scripts/bench-*)
#   make install PREFIX=/usr/local
#
# Sources are found by convention, so adding a file never means editing this:
#   common/LAYER/*.c     -> build/libbertpipe.a           (the shared library, one folder per layer)
#   common/LAYER/*.cu    -> build/libbertpipe_cuda.a      (only when nvcc exists)
#   stages/NAME.c        -> bin/NAME
#   tests/unit/test_*.c  -> build/tests/test_*            (TAP on stdout)
#   tests/tools/*.c      -> build/tools/*                 (helpers for tests and parity runs)
#   tests/bench/*.c      -> build/bench/*

PREFIX   ?= /usr/local
CC       ?= cc
ARCH     ?= -march=native
OPT      ?= -O2
NVCC     ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
PKGS      = libzmq msgpack libutf8proc libarchive openblas jansson

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
# oneDNN (Debian libdnnl-dev, no pkg-config file) gives the cpu backend its bf16 products; a build
# without it still works and says so when --precision bf16 asks for them.
DNNL_H     ?= $(firstword $(wildcard /usr/include/oneapi/dnnl/dnnl.h /usr/local/include/oneapi/dnnl/dnnl.h))
ifneq ($(DNNL_H),)
DNNL_DEFS   = -DBP_HAVE_DNNL=1
DNNL_LIBS   = -ldnnl -lgomp
endif
CFLAGS_ALL  = -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter \
              -g $(OPT) $(ARCH) -fno-math-errno -Icommon $(PKG_CFLAGS) $(DNNL_DEFS) $(CFLAGS)
LDLIBS_ALL  = $(PKG_LIBS) $(DNNL_LIBS) -lm -lpthread $(LDLIBS)

# The test build also compiles in fault injection (backend/fault.h, BERTPIPE_FAULT); bin/ never has it.
SAN_FLAGS   = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined -DBP_FAULT_INJECTION

COMMON_SRC  := $(sort $(wildcard common/*/*.c))
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

.PHONY: all deps test test-gpu bench clean install san cuda-note
all: deps cuda-note $(STAGES) $(TOOLS) $(BENCHES)

deps:
	@scripts/setup

cuda-note:
ifeq ($(strip $(NVCC)),)
	@echo "make: nvcc not found: CUDA backend skipped (CPU only)" >&2
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

build/libbertpipe.a: $(patsubst common/%.c,build/obj/%.o,$(COMMON_SRC))
	@rm -f $@; ar rcs $@ $^
build/san/libbertpipe.a: $(patsubst common/%.c,build/san/obj/%.o,$(COMMON_SRC))
	@rm -f $@; ar rcs $@ $^
build/libbertpipe_cuda.a: $(patsubst common/%.cu,build/cuda/%.o,$(CUDA_SRC))
	@rm -f $@; ar rcs $@ $^

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

bin build/san/bin build/san/tests build/tools build/bench:
	@mkdir -p $@

san: deps $(SAN_STAGES) $(TESTS)

# ---- tests --------------------------------------------------------------------
# scripts/run-tests runs the unit tests and bats (all TAP) and prints the totals line.
test: all san
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

# ---- install --------------------------------------------------------------------
# Stages go to PREFIX/bin; the pipeline manifests (and the embedded default data they use)
# to PREFIX/share/bertpipe/pipelines, where they find the stages on PATH.
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/bertpipe/pipelines/default
	install -m 755 $(STAGES) $(DESTDIR)$(PREFIX)/bin/
	install -m 755 pipelines/sst pipelines/squad pipelines/predict-sst pipelines/predict-squad \
	    $(DESTDIR)$(PREFIX)/share/bertpipe/pipelines/
	install -m 644 pipelines/lib.sh $(DESTDIR)$(PREFIX)/share/bertpipe/pipelines/
	install -m 644 pipelines/default/* $(DESTDIR)$(PREFIX)/share/bertpipe/pipelines/default/

clean:
	rm -rf bin build
-include tests/gpu/gpu.mk
