# `segc --version` prints the flags this binary was built with: they are
# handed to src/cli/version.c alone (a change of flags rebuilds everything anyway).
$(BUILD)/src/cli/version.o: CFLAGS += -DSEGC_BUILD_FLAGS='"$(strip $(OPT) $(SAN))"' -DSEGC_BUILD_CC='"$(notdir $(CC))"'
