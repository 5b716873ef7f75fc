/*
 * One-pass calibration kernel behind trustseg.metrics.calibration_state (see calibration_kernel.py).
 *
 * Each call reads n voxels once and adds, to float64 state arrays laid out as the Python state,
 *   top (3, S) and cls (K, 3, S): per fine bin the count, the sum of confidences and the sum of accuracies,
 *   sums[0] += sum of NLL terms, sums[1] += sum of Brier terms (sum over classes),
 * with exactly the conventions of the pure-torch path (bins, ties, eps clamp, validation). No temporaries: the
 * only memory is a (1 + K) x 2 x S histogram per call (two interleaved copies, so that consecutive voxels in the
 * same bin do not wait on each other's store).
 *
 * Plain C functions called through ctypes (which releases the GIL, so the Python side runs one call per thread
 * on disjoint voxel ranges). The Python module object exists only so that the build tooling can place the file.
 *
 * Return codes: 0 ok; 1 an invalid probability (NaN/inf, outside [0, 1], negative, sum off 1); 2 an invalid
 * label; 3 out of memory. On 1 or 2, *bad holds the first offending voxel of this call's range. The caller then
 * re-runs the torch path, which raises the detailed error.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#ifdef _WIN32
#define TS_EXPORT __declspec(dllexport)
#else
#define TS_EXPORT __attribute__((visibility("default")))
#endif

/* bumped whenever a signature or a convention changes; the Python side refuses a stale build */
#define TS_KERNEL_VERSION 1

enum { CLOSED_LEFT = 0, CLOSED_RIGHT = 1, CLOSED_TORCHMETRICS = 2 };
enum { TS_OK = 0, TS_BAD_PROB = 1, TS_BAD_LABEL = 2, TS_NO_MEMORY = 3 };

TS_EXPORT int ts_kernel_version(void) { return TS_KERNEL_VERSION; }

/* Per fine bin: count and Σ accuracy packed in one int64 (count << 32 | hits; a call covers < 2^31 voxels) and
 * Σ confidence, 16 bytes, so that one update touches one cache line; soft labels add a float64 Σ accuracy.
 * COPIES interleaved copies (voxel i goes to copy i % COPIES) so that runs of voxels in the same bin (the
 * common case: background at confidence ~1) do not wait on each other's store. Updates are branch-free: on
 * noisy inputs a data-dependent branch per voxel costs more than the rest of the work. */
#define COPIES 2 /* the hard-label loops hard-code copies 0 and 1 */
#define HIT_BITS 32

typedef struct {
    int64_t packed;
    double conf;
} bin_t;

typedef struct {
    int size;    /* S slots per histogram */
    bin_t *bin;  /* [nh][COPIES][S] */
    double *acc; /* [nh][COPIES][S], soft labels only */
} hist_t;

static void hist_free(hist_t *h) {
    free(h->bin);
    free(h->acc);
}

static int hist_alloc(hist_t *h, int nh, int size, int soft) {
    size_t m = (size_t)nh * COPIES * (size_t)size;
    h->size = size;
    h->bin = (bin_t *)calloc(m, sizeof(bin_t));
    h->acc = soft ? (double *)calloc(m, sizeof(double)) : NULL;
    if (!h->bin || (soft && !h->acc)) {
        hist_free(h);
        return 0;
    }
    return 1;
}

/* histogram `which` (0 = top label, 1 + k = class k) into a (3, S) float64 block, summing the copies */
static void hist_flush(const hist_t *h, int which, double *out) {
    int s = h->size;
    for (int c = 0; c < COPIES; c++) {
        size_t a = ((size_t)which * COPIES + (size_t)c) * (size_t)s;
        for (int j = 0; j < s; j++) {
            int64_t v = h->bin[a + j].packed;
            out[j] += (double)(v >> HIT_BITS);
            out[s + j] += h->bin[a + j].conf;
            out[2 * s + j] += (double)(v & ((INT64_C(1) << HIT_BITS) - 1)) + (h->acc ? h->acc[a + j] : 0.0);
        }
    }
}

/* fine bin of a confidence c in [0, 1]; t = c * fine is exact in double for float32 c (as the torch path) */
static inline int fine_index(double c, int fine, int closed) {
    double t = c * fine;
    int i = (int)t; /* floor, t >= 0 */
    if (closed == CLOSED_RIGHT) {
        if ((double)i == t) i -= 1; /* ceil(t) - 1 */
        if (i < 0) i = 0;
        if (i > fine - 1) i = fine - 1;
    } else if (closed == CLOSED_LEFT && i > fine - 1) {
        i = fine - 1;
    } else if (i > fine) {
        i = fine; /* torchmetrics mode: a K-class p_k may exceed 1 by up to the sum tolerance */
    }
    return i;
}

static inline void hist_add(hist_t *h, int which, int copy, int idx, double conf, int hit) {
    bin_t *o = h->bin + ((size_t)which * COPIES + (size_t)copy) * (size_t)h->size + (size_t)idx;
    o->packed += (INT64_C(1) << HIT_BITS) + hit;
    o->conf += conf;
}

static inline void hist_add_soft(hist_t *h, int which, int copy, int idx, double conf, double acc) {
    size_t o = ((size_t)which * COPIES + (size_t)copy) * (size_t)h->size + (size_t)idx;
    h->bin[o].packed += INT64_C(1) << HIT_BITS;
    h->bin[o].conf += conf;
    h->acc[o] += acc;
}

/* NLL of hard labels as logs of products of BLOCK clamped probabilities (>= eps, so no underflow) */
#define NLL_BLOCK(PT) (sizeof(PT) == 4 ? 32 : 16)
#define EPS_OF(PT) (sizeof(PT) == 4 ? (double)FLT_EPSILON : DBL_EPSILON)

/* ---------------------------------------------------------------------------------------------------------- */
/* Binary: p = P(class 1) (n,), hard labels in {0, 1} or soft labels in [0, 1] (same dtype as p).             */

/* One voxel of the hard-label kernels, written for voxel I into accumulators PROD, BRIER and histogram copy C.
 * The loops run two voxels per step (copies 0 and 1, two independent product and Brier chains); a bad value
 * jumps to `done` with rc and *bad set. */
#define BINARY_HARD_VOXEL(PT, I, PROD, BRIER, C)                                                              \
    {                                                                                                         \
        PT pi = p[I];                                                                                         \
        if (!(pi >= 0 && pi <= 1)) { *bad = (I); rc = TS_BAD_PROB; goto done; }                               \
        int64_t yv = (int64_t)y[I];                                                                           \
        if (yv != 0 && yv != 1) { *bad = (I); rc = TS_BAD_LABEL; goto done; }                                 \
        PT qi = (PT)1 - pi;                                                                                   \
        PT pq[2] = {qi, pi};                                                                                  \
        PT py = pq[yv];                                                                                       \
        PROD *= (double)(py < eps ? eps : py);                                                                \
        double d = 1.0 - (double)py;                                                                          \
        BRIER += d * d;                                                                                       \
        if (top) {                                                                                            \
            int pred1 = pi > qi; /* argmax of [1 - p, p], class 0 on ties */                                  \
            PT conf = pred1 ? pi : qi;                                                                        \
            hist_add(&h, 0, C, fine_index((double)conf, fine, closed), (double)conf, pred1 == yv);            \
        }                                                                                                     \
        if (cls0) hist_add(&h, 1, C, fine_index((double)qi, fine, closed), (double)qi, yv == 0);              \
        if (cls1) hist_add(&h, 2, C, fine_index((double)pi, fine, closed), (double)pi, yv == 1);              \
    }

/* End of every kernel: hand the sums and histograms to the caller only if every voxel was valid; free. */
#define FINISH_BINARY(BRIER_SUM)                                                                              \
    if (rc == TS_OK) {                                                                                        \
        sums[0] += nll;                                                                                       \
        sums[1] += 2.0 * (BRIER_SUM); /* both classes' squared errors */                                      \
        hist_flush(&h, 0, top_state);                                                                         \
        hist_flush(&h, 1, cls_state);                                                                         \
        hist_flush(&h, 2, cls_state + 3 * (size_t)(fine + 1));                                                \
    }                                                                                                         \
    hist_free(&h);                                                                                            \
    return rc;

#define FINISH_MULTI(BRIER_SUM)                                                                               \
    if (rc == TS_OK) {                                                                                        \
        sums[0] += nll;                                                                                       \
        sums[1] += (BRIER_SUM);                                                                               \
        hist_flush(&h, 0, top_state);                                                                         \
        for (int k = 0; k < K; k++)                                                                           \
            if (cmask[k]) hist_flush(&h, 1 + k, cls_state + 3 * (size_t)(fine + 1) * (size_t)k);              \
    }                                                                                                         \
    hist_free(&h);                                                                                            \
    return rc;

/* The loop shared by the hard-label kernels: two voxels a step (histogram copies 0 and 1, two independent
 * product and Brier chains), the NLL products folded into logs every NLL_BLOCK voxels; leaves nll, brier0/1, rc. */
#define HARD_LABEL_LOOP(VOXEL, PT)                                                                            \
    const PT eps = (PT)EPS_OF(PT);                                                                            \
    const int pairs = NLL_BLOCK(PT) / 2;                                                                      \
    double nll = 0.0, brier0 = 0.0, brier1 = 0.0, prod0 = 1.0, prod1 = 1.0;                                   \
    int inblock = 0, rc = TS_OK;                                                                              \
    int64_t i = 0;                                                                                            \
    for (; i + 1 < n; i += 2) {                                                                               \
        VOXEL(PT, i, prod0, brier0, 0)                                                                        \
        VOXEL(PT, i + 1, prod1, brier1, 1)                                                                    \
        if (++inblock == pairs) { nll -= log(prod0 * prod1); prod0 = prod1 = 1.0; inblock = 0; }              \
    }                                                                                                         \
    if (i < n) VOXEL(PT, i, prod0, brier0, 0)                                                                 \
done:                                                                                                         \
    nll -= log(prod0 * prod1);

#define DEFINE_BINARY_HARD(NAME, PT, LT)                                                                      \
    TS_EXPORT int NAME(const PT *p, const LT *y, int64_t n, int fine, int closed, int top, int cls0, int cls1, \
                       double *top_state, double *cls_state, double *sums, int64_t *bad) {                    \
        hist_t h;                                                                                             \
        if (!hist_alloc(&h, 3, fine + 1, 0)) return TS_NO_MEMORY;                                             \
        HARD_LABEL_LOOP(BINARY_HARD_VOXEL, PT)                                                                \
        FINISH_BINARY(brier0 + brier1)                                                                        \
    }

#define DEFINE_BINARY_SOFT(NAME, PT)                                                                          \
    TS_EXPORT int NAME(const PT *p, const PT *y, int64_t n, int fine, int closed, int top, int cls0, int cls1, \
                       double *top_state, double *cls_state, double *sums, int64_t *bad) {                    \
        hist_t h;                                                                                             \
        if (!hist_alloc(&h, 3, fine + 1, 1)) return TS_NO_MEMORY;                                             \
        const PT eps = (PT)EPS_OF(PT);                                                                        \
        double nll = 0.0, brier = 0.0;                                                                        \
        int rc = TS_OK;                                                                                       \
        for (int64_t i = 0; i < n; i++) {                                                                     \
            PT pi = p[i], ti = y[i];                                                                          \
            if (!(pi >= 0 && pi <= 1)) { *bad = i; rc = TS_BAD_PROB; break; }                                 \
            if (!(ti >= 0 && ti <= 1)) { *bad = i; rc = TS_BAD_LABEL; break; }                                \
            PT qi = (PT)1 - pi, ui = (PT)1 - ti;                                                              \
            if (ti != 0) nll -= (double)ti * log((double)(pi < eps ? eps : pi));                              \
            if (ui != 0) nll -= (double)ui * log((double)(qi < eps ? eps : qi));                              \
            double d = (double)pi - (double)ti;                                                               \
            brier += d * d;                                                                                   \
            int c = (int)(i % COPIES);                                                                        \
            if (top) {                                                                                        \
                int pred1 = pi > qi;                                                                          \
                PT conf = pred1 ? pi : qi;                                                                    \
                double acc = (double)(pred1 ? ti : ui);                                                      \
                hist_add_soft(&h, 0, c, fine_index((double)conf, fine, closed), (double)conf, acc);          \
            }                                                                                                 \
            if (cls0) hist_add_soft(&h, 1, c, fine_index((double)qi, fine, closed), (double)qi, (double)ui);  \
            if (cls1) hist_add_soft(&h, 2, c, fine_index((double)pi, fine, closed), (double)pi, (double)ti);  \
        }                                                                                                     \
        FINISH_BINARY(brier)                                                                                  \
    }

/* ---------------------------------------------------------------------------------------------------------- */
/* K classes: p (K, n) with class stride cs (voxels contiguous), hard labels (n,) in [0, K) or soft labels    */
/* (K, n) with class stride ys (same dtype as p). cmask[k] != 0: fill class k's histogram.                   */

#define MULTI_HARD_VOXEL(PT, I, PROD, BRIER, C)                                                               \
    {                                                                                                         \
        const PT *pv = p + (I);                                                                               \
        PT best = pv[0];                                                                                      \
        int arg = 0, neg = !(best >= 0);                                                                      \
        double s = (double)best, sq = (double)best * (double)best;                                            \
        for (int k = 1; k < K; k++) {                                                                         \
            PT v = pv[k * cs];                                                                                \
            s += (double)v;                                                                                   \
            sq += (double)v * (double)v;                                                                      \
            neg |= !(v >= 0);                                                                                 \
            int gt = v > best; /* first maximum on ties */                                                    \
            best = gt ? v : best;                                                                             \
            arg = gt ? k : arg;                                                                               \
        }                                                                                                     \
        if (neg || !(fabs(s - 1.0) <= tol)) { *bad = (I); rc = TS_BAD_PROB; goto done; }                      \
        int64_t yv = (int64_t)y[I];                                                                           \
        if (yv < 0 || yv >= K) { *bad = (I); rc = TS_BAD_LABEL; goto done; }                                  \
        PT py = pv[yv * cs];                                                                                  \
        PROD *= (double)(py < eps ? eps : py);                                                                \
        BRIER += sq - 2.0 * (double)py + 1.0;                                                                 \
        if (top) hist_add(&h, 0, C, fine_index((double)best, fine, closed), (double)best, arg == yv);         \
        if (any_cls) {                                                                                        \
            for (int k = 0; k < K; k++) {                                                                     \
                if (!cmask[k]) continue;                                                                      \
                PT v = pv[k * cs];                                                                            \
                hist_add(&h, 1 + k, C, fine_index((double)v, fine, closed), (double)v, yv == k);              \
            }                                                                                                 \
        }                                                                                                     \
    }

#define DEFINE_MULTI_HARD(NAME, PT, LT)                                                                       \
    TS_EXPORT int NAME(const PT *p, int64_t cs, const LT *y, int64_t ys, int64_t n, int K, int fine, int closed, \
                       int top, const uint8_t *cmask, double tol, double *top_state, double *cls_state,       \
                       double *sums, int64_t *bad) {                                                          \
        (void)ys;                                                                                             \
        hist_t h;                                                                                             \
        if (!hist_alloc(&h, 1 + K, fine + 1, 0)) return TS_NO_MEMORY;                                         \
        int any_cls = 0;                                                                                      \
        for (int k = 0; k < K; k++) any_cls |= cmask[k] != 0;                                                 \
        HARD_LABEL_LOOP(MULTI_HARD_VOXEL, PT)                                                                 \
        FINISH_MULTI(brier0 + brier1)                                                                         \
    }

#define DEFINE_MULTI_SOFT(NAME, PT)                                                                           \
    TS_EXPORT int NAME(const PT *p, int64_t cs, const PT *y, int64_t ys, int64_t n, int K, int fine, int closed, \
                       int top, const uint8_t *cmask, double tol, double *top_state, double *cls_state,       \
                       double *sums, int64_t *bad) {                                                          \
        hist_t h;                                                                                             \
        if (!hist_alloc(&h, 1 + K, fine + 1, 1)) return TS_NO_MEMORY;                                         \
        const PT eps = (PT)EPS_OF(PT);                                                                        \
        double nll = 0.0, brier = 0.0;                                                                        \
        int rc = TS_OK;                                                                                       \
        for (int64_t i = 0; i < n; i++) {                                                                     \
            const PT *pv = p + i, *tv = y + i;                                                                \
            PT best = pv[0];                                                                                  \
            int arg = 0, neg = 0, tneg = 0;                                                                   \
            double s = 0.0, st = 0.0;                                                                         \
            for (int k = 0; k < K; k++) {                                                                     \
                PT v = pv[k * cs], t = tv[k * ys];                                                            \
                s += (double)v;                                                                               \
                st += (double)t;                                                                              \
                neg |= !(v >= 0);                                                                             \
                tneg |= !(t >= 0);                                                                            \
                int gt = v > best;                                                                            \
                best = gt ? v : best;                                                                         \
                arg = gt ? k : arg;                                                                           \
            }                                                                                                 \
            if (neg || !(fabs(s - 1.0) <= tol)) { *bad = i; rc = TS_BAD_PROB; break; }                        \
            if (tneg || !(fabs(st - 1.0) <= tol)) { *bad = i; rc = TS_BAD_LABEL; break; }                     \
            int c = (int)(i % COPIES);                                                                        \
            for (int k = 0; k < K; k++) {                                                                     \
                PT v = pv[k * cs], t = tv[k * ys];                                                            \
                if (t != 0) nll -= (double)t * log((double)(v < eps ? eps : v));                              \
                double d = (double)v - (double)t;                                                             \
                brier += d * d;                                                                               \
                if (cmask[k]) hist_add_soft(&h, 1 + k, c, fine_index((double)v, fine, closed), (double)v, (double)t); \
            }                                                                                                 \
            if (top) {                                                                                       \
                double acc = (double)tv[arg * ys];                                                           \
                hist_add_soft(&h, 0, c, fine_index((double)best, fine, closed), (double)best, acc);          \
            }                                                                                                \
        }                                                                                                     \
        FINISH_MULTI(brier)                                                                                   \
    }

/* ts_<binary|multi>_<f32|f64>_<u8|i8|i16|i32|i64|soft>: probability dtype, then label dtype (soft: as p) */
#define DEFINE_ALL_LABELS(KIND, kind, PT, SUF)                                                                \
    DEFINE_##KIND##_HARD(ts_##kind##_##SUF##_u8, PT, uint8_t)                                                 \
    DEFINE_##KIND##_HARD(ts_##kind##_##SUF##_i8, PT, int8_t)                                                  \
    DEFINE_##KIND##_HARD(ts_##kind##_##SUF##_i16, PT, int16_t)                                                \
    DEFINE_##KIND##_HARD(ts_##kind##_##SUF##_i32, PT, int32_t)                                                \
    DEFINE_##KIND##_HARD(ts_##kind##_##SUF##_i64, PT, int64_t)                                                \
    DEFINE_##KIND##_SOFT(ts_##kind##_##SUF##_soft, PT)

DEFINE_ALL_LABELS(BINARY, binary, float, f32)
DEFINE_ALL_LABELS(BINARY, binary, double, f64)
DEFINE_ALL_LABELS(MULTI, multi, float, f32)
DEFINE_ALL_LABELS(MULTI, multi, double, f64)

static struct PyModuleDef ts_module = {
    PyModuleDef_HEAD_INIT, "_calibration_kernel",
    "C kernel of trustseg.metrics.calibration_state, called through ctypes (see calibration_kernel.py).", -1, NULL,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__calibration_kernel(void) { return PyModule_Create(&ts_module); }
