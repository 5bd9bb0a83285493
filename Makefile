# segc build. `make` builds the library, the CLI and the tests; `make test`
# runs every test; `make test-asan` runs them under ASan+UBSan.
#
# One binary for every x86-64 machine segc targets: the code is compiled for
# x86-64-v3 (AVX2, FMA, F16C, BMI2: both the AMD Zen and the Intel machines
# have it, and the hand-written AVX2 kernels and the compiler's 256-bit
# vectorisation are the hot paths) and the AVX-512 / AVX512-BF16 / AMX kernels
# are chosen at run time from CPUID (src/core/cpu.c; SEGC_ISA=avx2|avx512|
# avx512_bf16|amx forces a lower level). x86-64-v2 would also run on pre-2013
# CPUs but would turn every AVX2 kernel into its SSE fallback; the run-time
# guard in cpu.c names the missing features instead of dying with SIGILL.
# `make NATIVE=1` builds for this machine only (-march=native); use its own
# BUILD directory or `make clean` when switching (a flags change rebuilds).
BUILD    ?= build
CC       ?= gcc
OPT      ?= -O3
ifeq ($(NATIVE),1)
ARCH     ?= -march=native -DSEGC_BUILD_NATIVE
else
ARCH     ?= -march=x86-64-v3 -mtune=generic
endif
SAN      ?=
CFLAGS   += -std=c11 -D_GNU_SOURCE $(OPT) $(ARCH) $(SAN) -g -fopenmp -Wall -Wextra -Wno-unused-parameter \
            -Iinclude -I/usr/include/nifti -MMD -MP
LDLIBS   += -ldnnl -lopenblas -lspng -lpng -ljpeg -lyaml -lcjson -lniftiio -lznz -lz -lm
LDFLAGS  += -fopenmp $(SAN)
# Open MPI (data-parallel training): only src/train/dist.c includes mpi.h
MPI_CFLAGS := $(shell pkg-config --cflags ompi-c 2>/dev/null || mpicc --showme:compile 2>/dev/null)
MPI_LIBS   := $(shell pkg-config --libs ompi-c 2>/dev/null || mpicc --showme:link 2>/dev/null || echo -lmpi)
LDLIBS   += $(MPI_LIBS)

LIB_SRC  := $(wildcard src/core/*.c src/ops/*.c src/nn/*.c src/models/*.c src/data/*.c src/tasks/*.c src/train/*.c src/eval/*.c src/tune/*.c)
CLI_SRC  := $(wildcard src/cli/*.c)
TEST_SRC := $(wildcard tests/test_*.c)
TCOM_SRC := $(wildcard tests/common/*.c)
BENCH_SRC:= $(wildcard bench/*.c)

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/%.o)
TCOM_OBJ := $(TCOM_SRC:%.c=$(BUILD)/%.o)
TESTS    := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
BENCHES  := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)
LIB      := $(BUILD)/libsegc.a
DEPS_OK  := build/.deps-ok

.PHONY: all test test-isa test-asan FORCE fixtures bench-ops bench-train bench-data bench-dist demo clean deps fuzz
all: $(LIB) $(BUILD)/segc $(TESTS) $(BENCHES)

deps: $(DEPS_OK)
$(DEPS_OK): scripts/deps.sh
	@bash scripts/deps.sh
	@mkdir -p build && touch $@

# the compile command is a prerequisite: changing OPT/ARCH/SAN/NATIVE rebuilds every object
FLAGS_STAMP := $(BUILD)/.cflags
$(FLAGS_STAMP): FORCE
	@mkdir -p $(BUILD)
	@printf '%s\n' '$(CC) $(CFLAGS)' | cmp -s - $@ || printf '%s\n' '$(CC) $(CFLAGS)' > $@
FORCE:

$(BUILD)/%.o: %.c $(FLAGS_STAMP) | $(DEPS_OK)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# files compiled a second time for AVX-512 (src/ops/*_avx512.c include the baseline file; the
# baseline entry point dispatches on segc_cpu_isa(), see src/core/cpu.c)
ISA_AVX512_FLAGS := -mavx512f -mavx512bw -mavx512vl -mavx512dq
ISA_AVX512_OBJ   := $(patsubst %.c,$(BUILD)/%.o,$(wildcard src/ops/*_avx512.c))
$(ISA_AVX512_OBJ): CFLAGS += $(ISA_AVX512_FLAGS)
# kernels for AVX512-BF16 CPUs (src/ops/*_avx512bf16.c), called after segc_cpu_isa() says so
ISA_AVX512BF16_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(wildcard src/ops/*_avx512bf16.c))
$(ISA_AVX512BF16_OBJ): CFLAGS += $(ISA_AVX512_FLAGS) -mavx512bf16

$(BUILD)/src/train/dist.o: CFLAGS += $(MPI_CFLAGS)

$(LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/segc: $(CLI_OBJ) $(LIB)
	$(if $(CLI_OBJ),$(CC) $(LDFLAGS) $(CLI_OBJ) $(LIB) $(LDLIBS) -o $@,@true)

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(TCOM_OBJ) $(LIB)
	$(CC) $(LDFLAGS) $< $(TCOM_OBJ) $(LIB) $(LDLIBS) -lcmocka -o $@

$(BUILD)/bench/%: $(BUILD)/bench/%.o $(LIB)
	$(CC) $(LDFLAGS) $< $(LIB) $(LDLIBS) -o $@

# test-isa first (its own summary line), then every test at the CPU's best level; the last line
# stays run_tests.sh's summary, and either failing fails `make test`
test: $(TESTS) $(BUILD)/segc
	@isa=0; $(MAKE) --no-print-directory test-isa || isa=1; \
	bash scripts/run_tests.sh $(BUILD)/tests && [ $$isa = 0 ]

# The ISA-dependent tests again under each level below this CPU's best (the best one is what
# `make test` runs anyway), so one machine covers the paths the others take: on an AMX machine
# SEGC_ISA=avx2 runs what an AVX2-only machine runs, oneDNN's kernels included.
ISA_TESTS ?= test_cpu test_optim test_matmul test_conv test_elementwise test_norm test_resize_ce
test-isa: $(ISA_TESTS:%=$(BUILD)/tests/%)
	@levels=$$($(BUILD)/tests/test_cpu --levels) || exit 1; best=$${levels##* }; runs=0; bad=""; \
	for l in $$levels; do [ "$$l" = "$$best" ] && continue; \
	  for t in $(ISA_TESTS); do runs=$$((runs + 1)); \
	    out=$$(SEGC_ISA=$$l OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} OPENBLAS_NUM_THREADS=1 CMOCKA_MESSAGE_OUTPUT=stdout \
	           $(BUILD)/tests/$$t 2>&1) || { printf '%s\n' "$$out"; bad="$$bad $$l:$$t"; }; \
	  done; done; \
	echo "isa: levels on this CPU: $$levels; $$runs forced-level runs below $$best, failed:$${bad:- none}"; \
	[ -z "$$bad" ]

test-asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -fno-omit-frame-pointer" \
	  SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined" test

fixtures:
	@PY=$$(bash scripts/bench_env.sh torch monai transformers nibabel timm pycocotools) || { echo "fixtures: no Python with torch"; exit 1; }; \
	for g in tests/fixtures/gen_*.py; do echo "$$PY $$g"; $$PY $$g || exit 1; done

bench-ops: $(BENCHES)
	@BUILD=$(BUILD) bash scripts/bench_ops.sh

BENCH_TRAIN := bench_train bench_unet2d bench_segmenter bench_deeplab bench_ssd
bench-train: $(BENCH_TRAIN:%=$(BUILD)/bench/%)
	@bash scripts/bench_train.sh $(BENCH_TRAIN:%=$(BUILD)/bench/%)

# data-parallel SegFormer-B0 step: 1 process x 2 threads vs mpirun -np 2 x 1 thread (minutes; not a test)
bench-dist: $(BUILD)/bench/bench_dist
	@bash scripts/bench_dist.sh $(BUILD)/bench/bench_dist

bench-data: $(BUILD)/bench/bench_data
	@bash scripts/bench_data.sh $(BUILD)/bench/bench_data

clean:
	rm -rf build build-asan

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TCOM_OBJ:.o=.d) $(TESTS:=.d) $(BENCHES:=.d)
include mk/fuzz.mk
include mk/demo.mk
include mk/version.mk
