# tests/gpu/gpu.mk — the GPU suite's build rules, included by the top-level Makefile
# (-include tests/gpu/gpu.mk). `make test-gpu` builds tests/gpu/test_*.c into build/gpu-tests/
# and scripts/run-tests --gpu runs them. They link the CUDA library when this build has one
# (CUDA_DEFS, CUDA_LDLIBS from the Makefile) and otherwise compile to a test that reports
# itself skipped. Not built by plain `make`: nothing but the GPU suite needs them; `make test`
# builds them (and scripts/run-tests runs them: they skip without a GPU), so CI, which has nvcc
# and no GPU, fails when a change breaks their build.
# The two libraries are one link group: the cuda one needs base/ (bp_err_set) from the other.

GPU_TEST_SRC := $(sort $(wildcard tests/gpu/test_*.c))
GPU_TESTS    := $(patsubst tests/gpu/%.c,build/gpu-tests/%,$(GPU_TEST_SRC))

test-gpu: $(GPU_TESTS)
test: $(GPU_TESTS)

build/gpu-tests/%: tests/gpu/%.c $(LIB) $(COMMON_HDR) $(wildcard tests/unit/*.h) $(wildcard tests/gpu/*.h) | build/gpu-tests
	$(CC) $(CFLAGS_ALL) $(CUDA_DEFS) -Itests/unit $< -Wl,--start-group $(LIB) -Wl,--end-group $(LDLIBS_ALL) $(CUDA_LDLIBS) -o $@

build/gpu-tests:
	@mkdir -p $@
