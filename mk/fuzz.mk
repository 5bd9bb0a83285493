# libFuzzer targets for the parsers: PNG, JPEG, COCO JSON, NIfTI, safetensors,
# the checkpoint state and the YAML config with overrides (fuzz/fuzz_*.c).
# `make fuzz` builds them with clang (ASan + UBSan) in $(FUZZ_BUILD) and runs
# each for FUZZ_SECONDS seconds (a short pass: CI time is limited);
# `make fuzz-long` runs each for FUZZ_RUNS executions (default 10^7; hours in
# all, for a release or after touching a parser). scripts/fuzz.sh does the
# running. Needs clang and libclang-rt-14-dev: `bash scripts/deps.sh --fuzz`.
# Not part of `make test` or .ci/run.
FUZZ_CC      ?= clang
FUZZ_BUILD   ?= build-fuzz
FUZZ_SECONDS ?= 20
FUZZ_RUNS    ?= 10000000
FUZZ_CFLAGS  := -std=c11 -D_GNU_SOURCE -O1 -g -fno-omit-frame-pointer -fopenmp -Iinclude -I/usr/include/nifti \
                -fsanitize=address,undefined -fno-sanitize-recover=undefined -Wno-pass-failed -MMD -MP
# The whole library, as an archive: each target links only the objects it
# reaches (the config and checkpoint targets reach the model registry, hence
# oneDNN and OpenBLAS).
FUZZ_LIB_OBJ := $(patsubst %.c,$(FUZZ_BUILD)/%.o,$(LIB_SRC))
FUZZ_LIB     := $(FUZZ_BUILD)/libsegc-fuzz.a
FUZZ_BINS    := $(patsubst fuzz/%.c,$(FUZZ_BUILD)/%,$(wildcard fuzz/fuzz_*.c))
FUZZ_LDLIBS  := $(LDLIBS)

$(FUZZ_BUILD)/src/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_LIB): $(FUZZ_LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

$(FUZZ_BUILD)/fuzz_%: fuzz/fuzz_%.c $(FUZZ_LIB)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $< $(FUZZ_LIB) $(FUZZ_LDLIBS) -o $@

$(FUZZ_BUILD)/make_seeds: fuzz/make_seeds.c $(FUZZ_LIB)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link $< $(FUZZ_LIB) $(FUZZ_LDLIBS) -o $@

fuzz-build: $(FUZZ_BINS) $(FUZZ_BUILD)/make_seeds

fuzz: fuzz-build
	@bash scripts/fuzz.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

fuzz-long: fuzz-build
	@bash scripts/fuzz.sh $(FUZZ_BUILD) 0 $(FUZZ_RUNS)

.PHONY: fuzz fuzz-build fuzz-long
-include $(FUZZ_LIB_OBJ:.o=.d) $(FUZZ_BINS:=.d)
