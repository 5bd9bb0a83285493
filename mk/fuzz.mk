# libFuzzer targets for the data parsers (PNG, JPEG, COCO JSON, NIfTI).
# `make fuzz` builds them with clang (ASan + UBSan) in $(FUZZ_BUILD) and runs
# each for FUZZ_SECONDS seconds (scripts/fuzz.sh). Needs clang and
# libclang-rt-14-dev: `bash scripts/deps.sh --fuzz`.
FUZZ_CC      ?= clang
FUZZ_BUILD   ?= build-fuzz
FUZZ_SECONDS ?= 20
FUZZ_CFLAGS  := -std=c11 -D_GNU_SOURCE -O1 -g -fno-omit-frame-pointer -fopenmp -Iinclude -I/usr/include/nifti \
                -fsanitize=address,undefined -fno-sanitize-recover=undefined -MMD -MP
FUZZ_LIB_OBJ := $(patsubst %.c,$(FUZZ_BUILD)/%.o,$(wildcard src/core/*.c src/data/image_io.c src/data/nifti.c \
                src/data/dataset.c src/data/ds_*.c))
FUZZ_BINS    := $(patsubst fuzz/%.c,$(FUZZ_BUILD)/%,$(wildcard fuzz/fuzz_*.c))
FUZZ_LDLIBS  := -lspng -ljpeg -lcjson -lniftiio -lznz -lz -lm

$(FUZZ_BUILD)/src/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_BUILD)/fuzz_%: fuzz/fuzz_%.c $(FUZZ_LIB_OBJ)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $< $(FUZZ_LIB_OBJ) $(FUZZ_LDLIBS) -o $@

$(FUZZ_BUILD)/make_seeds: fuzz/make_seeds.c $(FUZZ_LIB_OBJ)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link $< $(FUZZ_LIB_OBJ) $(FUZZ_LDLIBS) -o $@

fuzz-build: $(FUZZ_BINS) $(FUZZ_BUILD)/make_seeds

fuzz: fuzz-build
	@bash scripts/fuzz.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

.PHONY: fuzz fuzz-build
-include $(FUZZ_LIB_OBJ:.o=.d) $(FUZZ_BINS:=.d)
