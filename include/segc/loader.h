/* segc data loader: samplers (mmengine InfiniteSampler / sequential, with
 * rank/world sharding) and a threaded loader that decodes + augments into
 * preallocated, 64-byte aligned batch buffers with a prefetch depth.
 *
 * Determinism: which dataset index lands in which batch slot comes from the
 * sampler alone and every sample's augmentation is seeded from (seed, epoch,
 * index), so batches are bitwise identical for any number of workers, and a
 * loader resumed from a saved segc_sampler_state yields exactly the batches
 * an uninterrupted one would have. */
#ifndef SEGC_LOADER_H
#define SEGC_LOADER_H
#include "segc/augment.h"
#include "segc/data.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- samplers ---- */
typedef enum {
    SEGC_SAMPLER_INFINITE = 0,  /* endless passes, each a fresh seeded permutation (iteration-based training) */
    SEGC_SAMPLER_SEQUENTIAL,    /* one pass in order (evaluation) */
} segc_sampler_kind;

/* The sampler's position, small enough to store in a checkpoint. The global
 * stream is epoch 0's permutation, then epoch 1's, ...; rank r of W takes
 * stream positions r, r+W, r+2W, ... (mmengine's interleaved sharding), so
 * across ranks every epoch covers the dataset exactly once. */
typedef struct segc_sampler_state {
    uint64_t seed;
    int64_t epoch;
    int64_t position;   /* index in the epoch's permutation of this rank's next sample */
} segc_sampler_state;

typedef struct segc_sampler {
    segc_sampler_kind kind;
    bool shuffle;
    int64_t n;
    int rank, world;
    segc_sampler_state st;
    int64_t *perm;          /* permutation of perm_epoch (shuffle only) */
    int64_t perm_epoch;
} segc_sampler;

bool segc_sampler_init(segc_sampler *s, segc_sampler_kind kind, int64_t n, bool shuffle, uint64_t seed, int rank,
                       int world, char *err, size_t errlen);
void segc_sampler_free(segc_sampler *s);
/* Next dataset index for this rank and the epoch it belongs to; false once a
 * sequential pass is exhausted (infinite samplers never end). */
bool segc_sampler_next(segc_sampler *s, int64_t *index, int64_t *epoch);
segc_sampler_state segc_sampler_get_state(const segc_sampler *s);
/* false (message) for a state from another seed or out of range */
bool segc_sampler_set_state(segc_sampler *s, const segc_sampler_state *st, char *err, size_t errlen);
/* The seeded Fisher-Yates permutation of epoch (Philox-driven). */
void segc_permutation(uint64_t seed, int64_t epoch, int64_t n, int64_t *perm);

/* ---- sample sources ---- */
/* Where samples come from: a dataset, or anything that can decode index i.
 * load must be thread-safe and report failures with a message naming the file. */
typedef struct segc_sample_source {
    void *user;
    int64_t n;
    bool (*load)(void *user, int64_t i, segc_sample *out, char *err, size_t errlen);
    const char *(*name)(void *user, int64_t i);   /* file of sample i for messages; may be NULL */
} segc_sample_source;

segc_sample_source segc_dataset_source(const segc_dataset *ds);

/* ---- loader ---- */
typedef struct segc_loader_opts {
    int batch_size;             /* default 2 */
    int num_workers;            /* worker threads; 0 = decode in the caller's thread (default 2) */
    int prefetch;               /* batches prepared ahead of the consumer (default 2) */
    segc_sampler_kind sampler;  /* default INFINITE */
    bool shuffle;               /* default true */
    uint64_t seed;
    int rank, world_size;       /* default 0 of 1 */
    bool skip_bad;              /* replace an unreadable sample by the next index (warned, counted) */
    bool drop_last;             /* sequential: drop a short final batch */
    segc_dtype label_dtype;     /* SEGC_U8 (default) or SEGC_I64 */
    int channels;               /* image channels the pipeline must produce (default 3; 1..4 for U8 images, up to 16 for F32 medical slices) */
    const segc_sampler_state *resume;   /* start from a saved position (NULL: from the start) */
    bool quiet;                 /* no warnings on stderr for skipped samples */
} segc_loader_opts;

void segc_loader_opts_default(segc_loader_opts *o);

/* One batch. Arrays hold n entries; buffers stay valid until the next
 * segc_loader_next call. Images smaller than (h, w) (variable-size
 * pipelines) sit at the top-left, padded with the pipeline's pad value. */
typedef struct segc_batch {
    int n;
    int c, h, w;
    float *images;              /* n x c x h x w, 64-byte aligned */
    int label_h, label_w;       /* 0 when the samples have no label maps */
    segc_dtype label_dtype;
    void *labels;               /* n x label_h x label_w, padded with 255 */
    const int *img_h, *img_w;   /* each sample's unpadded image size */
    const int *label_hs, *label_ws;
    const int *ori_h, *ori_w;   /* size before augmentation */
    const int64_t *index;       /* dataset index actually loaded */
    const int64_t *epoch;
    const bool *flipped;
    const int *n_boxes;         /* detection: per-sample boxes (pixels in the output image) */
    float *const *boxes;
    int32_t *const *box_labels;
    uint8_t *const *box_crowd;
    int64_t seq;                /* batches returned before this one by this loader */
    int n_skipped;              /* unreadable samples replaced in this batch */
    segc_sampler_state resume_state;   /* resuming from here continues with the next batch */
} segc_batch;

typedef struct segc_loader segc_loader;

/* NULL (message) on bad options. The pipeline is copied. */
segc_loader *segc_loader_new(segc_sample_source src, const segc_pipeline *p, const segc_loader_opts *o, char *err,
                             size_t errlen);
/* Next batch. NULL at the end of a sequential pass (err set to "") or on a
 * failure (err names the sample's file); after a failure every call fails. */
const segc_batch *segc_loader_next(segc_loader *l, char *err, size_t errlen);
/* Position after the last batch returned (the start position before any). */
segc_sampler_state segc_loader_state(const segc_loader *l);
int64_t segc_loader_skipped(const segc_loader *l);   /* total over returned batches */
/* Samples per rank per pass of a sequential loader / per epoch otherwise. */
int64_t segc_loader_samples_per_epoch(const segc_loader *l);
void segc_loader_free(segc_loader *l);

#ifdef __cplusplus
}
#endif
#endif
