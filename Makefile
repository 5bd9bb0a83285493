# segc build. `make` builds the library, the CLI and the tests; `make test`
# runs every test; `make test-asan` runs them under ASan+UBSan.
BUILD    ?= build
CC       ?= gcc
OPT      ?= -O3 -march=native
SAN      ?=
CFLAGS   += -std=c11 -D_GNU_SOURCE $(OPT) $(SAN) -g -fopenmp -Wall -Wextra -Wno-unused-parameter \
            -Iinclude -I/usr/include/nifti -MMD -MP
LDLIBS   += -ldnnl -lopenblas -lspng -lpng -ljpeg -lyaml -lcjson -lniftiio -lznz -lz -lm
LDFLAGS  += -fopenmp $(SAN)

LIB_SRC  := $(wildcard src/core/*.c src/ops/*.c src/nn/*.c src/models/*.c src/data/*.c src/tasks/*.c src/train/*.c src/eval/*.c)
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

.PHONY: all test test-asan fixtures bench-ops bench-train bench-data demo clean deps fuzz
all: $(LIB) $(BUILD)/segc $(TESTS) $(BENCHES)

deps: $(DEPS_OK)
$(DEPS_OK): scripts/deps.sh
	@bash scripts/deps.sh
	@mkdir -p build && touch $@

$(BUILD)/%.o: %.c | $(DEPS_OK)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/segc: $(CLI_OBJ) $(LIB)
	$(if $(CLI_OBJ),$(CC) $(LDFLAGS) $(CLI_OBJ) $(LIB) $(LDLIBS) -o $@,@true)

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(TCOM_OBJ) $(LIB)
	$(CC) $(LDFLAGS) $< $(TCOM_OBJ) $(LIB) $(LDLIBS) -lcmocka -o $@

$(BUILD)/bench/%: $(BUILD)/bench/%.o $(LIB)
	$(CC) $(LDFLAGS) $< $(LIB) $(LDLIBS) -o $@

test: $(TESTS) $(BUILD)/segc
	@bash scripts/run_tests.sh $(BUILD)/tests

test-asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -march=native -fno-omit-frame-pointer" \
	  SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined" test

fixtures:
	@PY=$$(bash scripts/bench_env.sh torch monai transformers nibabel timm) || { echo "fixtures: no Python with torch"; exit 1; }; \
	for g in tests/fixtures/gen_*.py; do echo "$$PY $$g"; $$PY $$g || exit 1; done

bench-ops: $(BENCHES)
	@BUILD=$(BUILD) bash scripts/bench_ops.sh

BENCH_TRAIN := bench_train bench_unet2d bench_segmenter bench_deeplab
bench-train: $(BENCH_TRAIN:%=$(BUILD)/bench/%)
	@bash scripts/bench_train.sh $(BENCH_TRAIN:%=$(BUILD)/bench/%)

bench-data: $(BUILD)/bench/bench_data
	@bash scripts/bench_data.sh $(BUILD)/bench/bench_data

clean:
	rm -rf build build-asan

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TCOM_OBJ:.o=.d) $(TESTS:=.d) $(BENCHES:=.d)
include mk/fuzz.mk
include mk/demo.mk
include mk/version.mk
