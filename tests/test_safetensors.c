/* The safetensors reader against crafted, hostile headers: every shape
 * product, byte size and offset is checked for overflow and against the file
 * (a wrapped element count must not match a 0-byte tensor), the header size is
 * bounded, and each refusal is one clear line naming the file and tensor.
 * Also the writer's refusal of shapes it cannot store. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/harness.h"

/* header JSON + data bytes as one safetensors image in buf; returns its size */
static size_t craft(unsigned char *buf, size_t cap, const char *json, size_t data_bytes) {
    size_t jl = strlen(json);
    assert_true(8 + jl + data_bytes <= cap);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(((uint64_t)jl >> (8 * i)) & 0xff);
    memcpy(buf + 8, json, jl);
    for (size_t i = 0; i < data_bytes; i++) buf[8 + jl + i] = (unsigned char)i;
    return 8 + jl + data_bytes;
}

/* the crafted file must be refused with a message holding each needle */
static void refused(const char *json, size_t data_bytes, const char *needle, const char *needle2) {
    static unsigned char buf[1 << 16];
    size_t n = craft(buf, sizeof buf, json, data_bytes);
    char err[512] = "";
    segc_st_file *f = segc_st_open_mem(buf, n, "crafted.safetensors", err, sizeof err);
    if (f) segc_st_close(f);
    EXPECT_FAIL(f != NULL, err, "crafted.safetensors", needle, needle2);
}

static void test_overflowing_shapes(void **state) {
    /* [2^62, 4] F32: the element count wraps to 0 in 64 bits, which would match 0 data bytes */
    refused("{\"t\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,0]}}", 0, "'t'",
            "more elements or bytes than fit in 64 bits");
    /* [2^31, 2^31, 2^31]: 2^93 elements, formerly reported as "0 elements" */
    refused("{\"t\":{\"dtype\":\"U8\",\"shape\":[2147483648,2147483648,2147483648],\"data_offsets\":[0,0]}}", 0,
            "[2147483648, 2147483648, 2147483648]", "64 bits");
    /* elements fit, bytes do not: 2^62 F32 elements are 2^64 bytes */
    refused("{\"t\":{\"dtype\":\"F32\",\"shape\":[2,2305843009213693952],\"data_offsets\":[0,0]}}", 0, "'t'", "64 bits");
    /* a zero dimension makes any other dimension harmless: 0 elements, 0 bytes */
    static unsigned char buf[256];
    size_t n = craft(buf, sizeof buf, "{\"z\":{\"dtype\":\"F32\",\"shape\":[0,4503599627370496],\"data_offsets\":[0,0]}}", 0);
    char err[512];
    segc_st_file *f = segc_st_open_mem(buf, n, "zero.safetensors", err, sizeof err);
    if (!f) fail_msg("%s", err);
    assert_int_equal(segc_st_get(f, "z")->nbytes, 0);
    segc_st_close(f);
}

static void test_bad_numbers(void **state) {
    refused("{\"t\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "'t'", "shape entry 0");
    refused("{\"t\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,6]}}", 8, "'t'", "shape entry 0");
    refused("{\"t\":{\"dtype\":\"F32\",\"shape\":[1e300],\"data_offsets\":[0,4]}}", 4, "'t'", "shape entry 0");
    refused("{\"t\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8, "'t'", "shape entry 0");
    refused("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[\"0\",4]}}", 4, "'t'", "data_offsets");
    refused("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4, "'t'", "data_offsets");
    refused("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,1e30]}}", 4, "'t'", "data_offsets");
    refused("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4, "'t'", "outside");
    refused("{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, "'t'", "outside the 4 data bytes");
    refused("{\"t\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "8 bytes for shape [3]", "expected 12");
    refused("{\"t\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, "'t'", "dims");
    refused("{\"t\":{\"dtype\":\"Q4\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "'t'", "unknown dtype 'Q4'");
    refused("{\"t\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "'t'", "malformed");
    refused("{\"t\":7}", 0, "'t'", "malformed");
    refused("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
            "\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "'t'", "twice");
    refused("{\"__metadata__\":[1,2]}", 0, "__metadata__", NULL);
    refused("[1,2,3]", 0, "not a JSON object", NULL);
}

static void test_header_bounds(void **state) {
    unsigned char buf[64];
    char err[512];
    /* header length past the end, and past 2^63 */
    size_t n = craft(buf, sizeof buf, "{}", 0);
    buf[0] = 200;
    EXPECT_FAIL(segc_st_open_mem(buf, n, "long.safetensors", err, sizeof err) != NULL, err, "long.safetensors",
                "header length 200 exceeds file size 10");
    memset(buf, 0xff, 8);
    EXPECT_FAIL(segc_st_open_mem(buf, n, "huge.safetensors", err, sizeof err) != NULL, err, "exceeds file size");
    EXPECT_FAIL(segc_st_open_mem(buf, 5, "short.safetensors", err, sizeof err) != NULL, err, "5 bytes, header needs 8");
    /* a header past the format's 100 MB limit, in a sparse file that is that
     * large: refused before any parsing (no data is ever written or read) */
    char path[] = "/tmp/segc_st_big_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    uint64_t hl = (uint64_t)SEGC_ST_MAX_HEADER + 1;
    unsigned char h8[8];
    for (int i = 0; i < 8; i++) h8[i] = (unsigned char)(hl >> (8 * i));
    assert_int_equal(write(fd, h8, 8), 8);
    assert_int_equal(ftruncate(fd, (off_t)(8 + hl)), 0);
    close(fd);
    segc_st_file *f = segc_st_open(path, err, sizeof err);
    unlink(path);
    if (f) segc_st_close(f);
    EXPECT_FAIL(f != NULL, err, "MiB limit");
    /* not a regular file, missing file */
    EXPECT_FAIL(segc_st_open("/tmp", err, sizeof err) != NULL, err, "/tmp", "not a regular file");
    EXPECT_FAIL(segc_st_open("/nonexistent/x.safetensors", err, sizeof err) != NULL, err, "x.safetensors", "cannot open");
}

/* a valid file written by the writer reads back through the mapping, and the
 * writer refuses a shape it cannot store, failing the save (nothing written) */
static void test_roundtrip_and_writer_refusals(void **state) {
    char path[] = "/tmp/segc_st_rt_XXXXXX", err[512];
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    float v[6] = {1, 2, 3, 4, 5, 6};
    segc_st_writer *w = segc_st_writer_new();
    assert_true(segc_st_writer_add(w, "a", SEGC_F32, 2, SHAPE(2, 3), v));
    assert_true(segc_st_writer_add(w, "empty", SEGC_F32, 1, SHAPE(0), v));
    segc_st_writer_meta(w, "k", "v");
    if (!segc_st_writer_save(w, path, err, sizeof err)) fail_msg("%s", err);
    segc_st_writer_free(w);
    segc_st_file *f = segc_st_open(path, err, sizeof err);
    if (!f) fail_msg("%s", err);
    assert_int_equal(segc_st_count(f), 2);
    const segc_st_entry *e = segc_st_get(f, "a");
    assert_non_null(e);
    assert_int_equal(e->nbytes, sizeof v);
    assert_memory_equal(e->data, v, sizeof v);
    assert_string_equal(segc_st_meta(f, "k"), "v");
    segc_st_close(f);

    w = segc_st_writer_new();
    assert_false(segc_st_writer_add(w, "neg", SEGC_F32, 2, SHAPE(2, -3), v));
    assert_false(segc_st_writer_add(w, "after", SEGC_F32, 1, SHAPE(1), v));   /* the first failure sticks */
    EXPECT_FAIL(segc_st_writer_save(w, path, err, sizeof err), err, "'neg'", "nothing written");
    segc_st_writer_free(w);
    f = segc_st_open(path, err, sizeof err);   /* the earlier file is untouched */
    if (!f) fail_msg("%s", err);
    assert_int_equal(segc_st_count(f), 2);
    segc_st_close(f);
    unlink(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_overflowing_shapes),
        cmocka_unit_test(test_bad_numbers),
        cmocka_unit_test(test_header_bounds),
        cmocka_unit_test(test_roundtrip_and_writer_refusals),
    };
    return cmocka_run_group_tests_name("safetensors", tests, NULL, NULL);
}
