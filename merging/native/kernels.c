/* Fused CPU kernels for task-vector merges (see merging/native/__init__.py).
 *
 * Every kernel is single-threaded over an index range [start, stop) of flattened tensors;
 * Python splits a tensor into block-aligned ranges and runs them on threads (ctypes drops
 * the GIL). Per-block results (counts, sums) are written at the block's global index, so
 * they do not depend on how many threads ran. Inputs are float32, bfloat16 or float16;
 * work is done in float32 on chunks of CH elements that stay in L1, with each input read
 * once per chunk: loads, converts, subtracts, masks and accumulates in one loop.
 */
#include <math.h>
#include <stdint.h>
#if defined(__AVX512F__) || defined(__BMI2__)
#include <immintrin.h>
#endif
#include <stdlib.h>
#include <string.h>

enum { F32 = 0, BF16 = 1, F16 = 2 };
#define CH 512           /* a power of two: chunks never straddle a 2^32 index boundary */
#define BLOCK (1 << 16)  /* must match BLOCK in ops.py */
#define INLINE static inline __attribute__((always_inline))

typedef struct {
    int64_t low_cut, high_cut;   /* index where the head thresholds give way to the tail ones */
    float low_head, low_tail;    /* keep only |d| >  low  (head: index < low_cut)  */
    float high_head, high_tail;  /* keep only |d| <= high (head: index < high_cut) */
    float density;               /* random: keep only u(seed, index) < density     */
    uint32_t seed;
    int32_t random;
    float coef;                  /* the kept delta's multiplier in the mix          */
    float weight;                /* its share of the sign-election divisor          */
    int32_t della;               /* DELLA: keep only u(seed, index) < p(bin), scale by s(bin) */
    int32_t della_inverse;       /* s = 1/p (rescale_norm inverse_density), else 1          */
    int64_t row_len;             /* DELLA ranks within rows of this many elements            */
    double della_lo, della_span; /* p = lo + span · (mean rank in the row's bin) / (L − 1)   */
    const uint8_t *mask;         /* if set: keep only where bit i is set (drop_masks' output)  */
} keep_t;

/* Element i of a tensor of dtype dt, as float32. Called with a constant dt in the
 * dtype-specialized copies of each loop (see DISPATCH). */
INLINE float ld(const void *p, int dt, int64_t i) {
    if (dt == F32) return ((const float *)p)[i];
    if (dt == BF16) {
        uint32_t u = (uint32_t)((const uint16_t *)p)[i] << 16;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    return (float)((const _Float16 *)p)[i];
}

/* Stores v as element i of dtype dt (bf16: round to nearest, ties to even); returns 1 if
 * the stored value is NaN or inf. */
INLINE int st(void *p, int dt, int64_t i, float v) {
    uint32_t x;
    memcpy(&x, &v, 4);
    if (dt == F32) {
        ((float *)p)[i] = v;
        return (x & 0x7f800000u) == 0x7f800000u;
    }
    if (dt == BF16) {
        uint32_t rounded = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
        uint16_t h = (x & 0x7fffffffu) > 0x7f800000u ? (uint16_t)((x >> 16) | 0x40u) : (uint16_t)rounded;
        ((uint16_t *)p)[i] = h;
        return (h & 0x7f80u) == 0x7f80u;
    }
    _Float16 h = (_Float16)v;
    ((_Float16 *)p)[i] = h;
    uint16_t bits;
    memcpy(&bits, &h, 2);
    return (bits & 0x7c00u) == 0x7c00u;
}

/* Runs BODY with a compile-time dtype constant DT, so that each loop is specialized. */
#define DISPATCH(dt, ...)                                            \
    do {                                                             \
        if ((dt) == F32) { const int DT = F32; __VA_ARGS__; }        \
        else if ((dt) == BF16) { const int DT = BF16; __VA_ARGS__; } \
        else { const int DT = F16; __VA_ARGS__; }                    \
    } while (0)

/* Counter-based uniform draw: lowbias32 (Wellons) of the index mixed with the seed.
 * merging/keep_rules.py:uniform_draws computes the same bits with torch. `mixed` is
 * seed ^ (index >> 32) * 0x85ebca77, constant over a chunk. */
INLINE uint32_t draw_bits(uint32_t mixed, uint32_t index_lo) {  /* the draw's 24 bits H: u = H · 2^-24 */
    uint32_t h = index_lo * 0x9e3779b1u ^ mixed;
    h ^= h >> 16; h *= 0x7feb352du;
    h ^= h >> 15; h *= 0x846ca68bu;
    h ^= h >> 16;
    return h >> 8;
}

INLINE float draw(uint32_t mixed, uint32_t index_lo) { return (float)draw_bits(mixed, index_lo) * 0x1p-24f; }

#ifdef __AVX512F__
/* Sixteen elements from i, as float32 (exact, like ld). */
INLINE __m512 ld16(const void *p, int dt, int64_t i) {
    if (dt == F32) return _mm512_loadu_ps((const float *)p + i);
    const __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)p + i));
    if (dt == BF16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    return _mm512_cvtph_ps(h);
}
#endif

INLINE int bit(const uint8_t *bits, int64_t i) { return (bits[i >> 3] >> (i & 7)) & 1; }

INLINE uint32_t draw_mix(const keep_t *k, int64_t i) {
    return k->seed ^ (uint32_t)((uint64_t)i >> 32) * 0x85ebca77u;
}

/* DELLA's binned ranks (merging/keep_rules.py:DellaDrop). The bin of a magnitude is its
 * float32 bit pattern >> 19 (exponent and 4 mantissa bits: 16 bins per binade) counted from
 * DBINS - 1 below the row's largest, everything lower sharing bin 0. A row's histogram of
 * bins gives each bin the mean rank of its elements, hence one keep probability and one
 * scale per bin: a lookup per element instead of a sort per row. */
#define DBINS 256
#define DSHIFT 19

typedef struct {
    uint8_t thr_hi[DBINS] __attribute__((aligned(64)));  /* min(thr >> 16, 255): settles 255 in 256 draws */
    uint32_t thr[DBINS];  /* keep iff H < thr(bin): u = H·2^-24 < p ⇔ H < ⌈p·2^24⌉, exactly */
    float p[DBINS];       /* keep probability per bin */
    float s[DBINS];       /* scale of a kept entry per bin (inverse_density only) */
    int64_t row;          /* the row these tables are for (-1: none yet) */
    uint16_t *keys;       /* scratch (della_tabs): the row's keys, then its bins */
    const uint8_t *bins;  /* the row's bins, one byte per element */
} della_tab_t;

INLINE uint32_t mag_key(float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    return (u & 0x7fffffffu) >> DSHIFT;
}

INLINE int della_bin(uint32_t key, int32_t floor_key) {
    int bin = (int)key - floor_key;
    return bin > 0 ? bin : 0;
}

/* Tables for M models with room for rows of row_len (NULL when out of memory); free with
 * della_tabs_free. Each model has its own scratch: the bins of its row outlive a chunk. */
static della_tab_t *della_tabs(int M, int64_t row_len) {
    della_tab_t *tabs = (della_tab_t *)aligned_alloc(64, (size_t)M * sizeof(della_tab_t));
    if (!tabs) return NULL;
    int ok = 1;
    for (int m = 0; m < M; m++) {
        tabs[m].row = -1;
        tabs[m].keys = (uint16_t *)malloc((size_t)(row_len + 1) * (sizeof(uint16_t) + 1) + 64);
        ok &= tabs[m].keys != NULL;
    }
    if (!ok) {
        for (int m = 0; m < M; m++) free(tabs[m].keys);
        free(tabs);
        return NULL;
    }
    return tabs;
}

static void della_tabs_free(della_tab_t *tabs, int M) {
    if (!tabs) return;
    for (int m = 0; m < M; m++) free(tabs[m].keys);
    free(tabs);
}

/* count[0..DBINS) → 2·below + count − 1 per bin, below = the count of the bins under it. */
static void twice_mean_ranks(const int32_t *restrict count, int32_t *restrict out) {
#ifdef __AVX512F__
    /* A scan in registers: 4 shift-and-add steps per 16 bins, plus the running total. */
    const __m512i zero = _mm512_setzero_si512(), last = _mm512_set1_epi32(15);
    __m512i carry = zero;
    for (int bin = 0; bin < DBINS; bin += 16) {
        const __m512i c = _mm512_loadu_si512(count + bin);
        __m512i incl = _mm512_add_epi32(c, _mm512_alignr_epi32(c, zero, 15));
        incl = _mm512_add_epi32(incl, _mm512_alignr_epi32(incl, zero, 14));
        incl = _mm512_add_epi32(incl, _mm512_alignr_epi32(incl, zero, 12));
        incl = _mm512_add_epi32(incl, _mm512_alignr_epi32(incl, zero, 8));
        const __m512i below = _mm512_add_epi32(_mm512_sub_epi32(incl, c), carry);
        _mm512_storeu_si512(out + bin, _mm512_sub_epi32(_mm512_add_epi32(_mm512_add_epi32(below, below), c),
                                                        _mm512_set1_epi32(1)));
        carry = _mm512_add_epi32(carry, _mm512_permutexvar_epi32(last, incl));
    }
#else
    int32_t below = 0;
    for (int bin = 0; bin < DBINS; bin++) {
        out[bin] = 2 * below + count[bin] - 1;
        below += count[bin];
    }
#endif
}

/* ⌈density · 2^24⌉ clamped to [0, 2^24]: u = H·2^-24 < density ⇔ H < it, exactly (the scale
 * is a power of two). */
static uint32_t draw_threshold(float density) {
    double h = (double)density * 0x1p24;
    h = h > 0.0 ? (h < 0x1p24 ? h : 0x1p24) : 0.0;
    return (uint32_t)ceil(h);
}

/* thr = draw_threshold(p) per bin, and its top byte. */
static void della_thresholds(della_tab_t *t) {
    int bin = 0;
#ifdef __AVX512F__
    const __m512 top = _mm512_set1_ps(0x1p24f), zero = _mm512_setzero_ps();
    for (; bin < DBINS; bin += 16) {
        const __m512 h = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(_mm512_loadu_ps(t->p + bin), top), zero), top);
        __m512i c = _mm512_cvttps_epi32(h);
        c = _mm512_mask_add_epi32(c, _mm512_cmp_ps_mask(_mm512_cvtepi32_ps(c), h, _CMP_LT_OQ), c, _mm512_set1_epi32(1));
        _mm512_storeu_si512(t->thr + bin, c);
        _mm_storeu_si128((__m128i *)(t->thr_hi + bin),
                         _mm512_cvtepi32_epi8(_mm512_min_epu32(_mm512_srli_epi32(c, 16), _mm512_set1_epi32(255))));
    }
#endif
    for (; bin < DBINS; bin++) {
        const uint32_t c = draw_threshold(t->p[bin]);
        t->thr[bin] = c;
        t->thr_hi[bin] = (uint8_t)(c >> 16 > 255 ? 255 : c >> 16);
    }
}

/* The tables of the rule's row `row`, and the row's bins. */
static void della_tables(della_tab_t *t, const keep_t *k, const void *x, const void *b, int dt, int64_t row) {
    const int64_t L = k->row_len, rs = row * L;
    uint16_t *restrict keys = t->keys;
    uint8_t *restrict bins = (uint8_t *)(keys + L + 1);
    uint32_t top = 0;
    /* The next row comes from memory while this one is counted (measured: 4-5% of a DELLA merge). */
    const int64_t size = dt == F32 ? 4 : 2;
    for (int64_t o = 0; o < L * size; o += 64) {
        __builtin_prefetch((const char *)x + (rs + L) * size + o);
        if (b) __builtin_prefetch((const char *)b + (rs + L) * size + o);
    }
    if (b) DISPATCH(dt, { for (int64_t j = 0; j < L; j++) {
        uint32_t key = mag_key(ld(x, DT, rs + j) - ld(b, DT, rs + j));
        keys[j] = (uint16_t)key;
        top = key > top ? key : top; } });
    else DISPATCH(dt, { for (int64_t j = 0; j < L; j++) {
        uint32_t key = mag_key(ld(x, DT, rs + j));
        keys[j] = (uint16_t)key;
        top = key > top ? key : top; } });
    const int32_t floor_key = (int32_t)top - (DBINS - 1);
    for (int64_t j = 0; j < L; j++) bins[j] = (uint8_t)della_bin(keys[j], floor_key);  /* vectorized */
    int32_t hist[8][DBINS];  /* eight interleaved histograms, fed from one 8-byte load: no store-to-load chains on one bin */
    memset(hist, 0, sizeof hist);
    int64_t j = 0;
    for (; j + 8 <= L; j += 8) {
        uint64_t w;
        memcpy(&w, bins + j, 8);
        hist[0][w & 255]++;
        hist[1][(w >> 8) & 255]++;
        hist[2][(w >> 16) & 255]++;
        hist[3][(w >> 24) & 255]++;
        hist[4][(w >> 32) & 255]++;
        hist[5][(w >> 40) & 255]++;
        hist[6][(w >> 48) & 255]++;
        hist[7][w >> 56]++;
    }
    for (; j < L; j++) hist[0][bins[j]]++;
    int32_t count[DBINS], twice_mean_rank[DBINS];
    for (int bin = 0; bin < DBINS; bin++)
        count[bin] = hist[0][bin] + hist[1][bin] + hist[2][bin] + hist[3][bin] + hist[4][bin] + hist[5][bin] +
                     hist[6][bin] + hist[7][bin];
    twice_mean_ranks(count, twice_mean_rank);
    const double scale = L > 1 ? 1.0 / (2.0 * (double)(L - 1)) : 0.0, lo = k->della_lo, span = k->della_span;
    for (int bin = 0; bin < DBINS; bin++) {
        const double r = L > 1 ? (double)twice_mean_rank[bin] * scale : 0.5;
        t->p[bin] = (float)(lo + span * r);
    }
    della_thresholds(t);
    if (k->della_inverse)  /* only the inverse-density rescale scales kept entries */
        for (int bin = 0; bin < DBINS; bin++) t->s[bin] = 1.0f / t->p[bin];
    t->row = row;
    t->bins = bins;
}

#ifdef __AVX512F__
/* lowbias32 of 16 indices whose products with the golden ratio are g (draw_bits before its
 * final >> 8). */
INLINE __m512i lowbias16(__m512i g, __m512i mix) {
    const __m512i c1 = _mm512_set1_epi32(0x7feb352d), c2 = _mm512_set1_epi32((int)0x846ca68bu);
    __m512i h = _mm512_xor_si512(g, mix);
    h = _mm512_mullo_epi32(_mm512_xor_si512(h, _mm512_srli_epi32(h, 16)), c1);
    h = _mm512_mullo_epi32(_mm512_xor_si512(h, _mm512_srli_epi32(h, 15)), c2);
    return _mm512_xor_si512(h, _mm512_srli_epi32(h, 16));
}
#endif

/* Bit j of words := u(seed, i0 + j) < p(bin j) for j < n (bins: the piece's bins). Vectorized
 * as bytes: the top 8 of the draw's 24 bits against thr_hi decide all but the equal ones, which
 * are compared whole. */
static void della_keep_words(uint64_t *restrict words, const della_tab_t *restrict t, const uint8_t *restrict bins,
                             uint32_t mixed, uint32_t i0, int n) {
    int j = 0;
#if defined(__AVX512VBMI__) && defined(__AVX512BW__)
    const __m512i t0 = _mm512_load_si512(t->thr_hi), t1 = _mm512_load_si512(t->thr_hi + 64);
    const __m512i t2 = _mm512_load_si512(t->thr_hi + 128), t3 = _mm512_load_si512(t->thr_hi + 192);
    /* Lane k of group q draws for element 16(k / 4) + 4q + k % 4 of the 64: the two packs
     * below then leave byte e holding element e's draw, with no permute. The index times the
     * golden ratio advances by adds. */
    const __m512i lane = _mm512_set_epi32(51, 50, 49, 48, 35, 34, 33, 32, 19, 18, 17, 16, 3, 2, 1, 0);
    const __m512i golden = _mm512_set1_epi32((int)0x9e3779b1u), mix = _mm512_set1_epi32((int)mixed);
    const __m512i step = _mm512_set1_epi32((int)(64u * 0x9e3779b1u)), quad = _mm512_set1_epi32((int)(4u * 0x9e3779b1u));
    __m512i g0 = _mm512_mullo_epi32(_mm512_add_epi32(_mm512_set1_epi32((int)i0), lane), golden);
    for (; j + 64 <= n; j += 64, g0 = _mm512_add_epi32(g0, step)) {
        const __m512i bin = _mm512_loadu_si512(bins + j);
        const __m512i thr = _mm512_mask_blend_epi8(_mm512_movepi8_mask(bin), _mm512_permutex2var_epi8(t0, bin, t1),
                                                   _mm512_permutex2var_epi8(t2, bin, t3));
        __m512i top[4], g = g0;
        for (int q = 0; q < 4; q++, g = _mm512_add_epi32(g, quad)) top[q] = _mm512_srli_epi32(lowbias16(g, mix), 24);
        const __m512i tops = _mm512_packus_epi16(_mm512_packus_epi32(top[0], top[1]), _mm512_packus_epi32(top[2], top[3]));
        uint64_t keep = _mm512_cmplt_epu8_mask(tops, thr), tie = _mm512_cmpeq_epu8_mask(tops, thr);
        for (; tie; tie &= tie - 1) {
            const int e = __builtin_ctzll(tie);
            keep |= (uint64_t)(draw_bits(mixed, i0 + (uint32_t)(j + e)) < t->thr[bins[j + e]]) << e;
        }
        words[j >> 6] = keep;
    }
#endif
    for (; j < n; j++) {
        if ((j & 63) == 0) words[j >> 6] = 0;
        words[j >> 6] |= (uint64_t)(draw_bits(mixed, i0 + (uint32_t)j) < t->thr[bins[j]]) << (j & 63);
    }
}

/* Bit j of words := u(seed, i0 + j) < density for j < n, i.e. DARE's keep of entry i0 + j
 * as kept_delta draws it (thr: draw_threshold(density)). */
static void random_keep_words(uint64_t *restrict words, uint32_t mixed, uint32_t i0, int n, uint32_t thr) {
    int j = 0;
#ifdef __AVX512F__
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    const __m512i golden = _mm512_set1_epi32((int)0x9e3779b1u), mix = _mm512_set1_epi32((int)mixed);
    const __m512i step = _mm512_set1_epi32((int)(16u * 0x9e3779b1u)), limit = _mm512_set1_epi32((int)thr);
    __m512i g = _mm512_mullo_epi32(_mm512_add_epi32(_mm512_set1_epi32((int)i0), lane), golden);
    for (; j + 64 <= n; j += 64) {
        uint64_t keep = 0;
        for (int q = 0; q < 4; q++, g = _mm512_add_epi32(g, step))
            keep |= (uint64_t)_mm512_cmplt_epu32_mask(_mm512_srli_epi32(lowbias16(g, mix), 8), limit) << (16 * q);
        words[j >> 6] = keep;
    }
#endif
    for (; j < n; j++) {
        if ((j & 63) == 0) words[j >> 6] = 0;
        words[j >> 6] |= (uint64_t)(draw_bits(mixed, i0 + (uint32_t)j) < thr) << (j & 63);
    }
}

INLINE int word_bit(const uint64_t *words, int j) { return (int)(words[j >> 6] >> (j & 63)) & 1; }

/* The bins of the piece of t's row that starts at global index i. */
INLINE const uint8_t *bins_at(const della_tab_t *t, const keep_t *k, int64_t i) { return t->bins + (i - t->row * k->row_len); }

/* d[j] = (x - b)[i + j] · s(bin) if u(seed, i + j) < p(bin), else 0, for j < n: one DELLA
 * rule over a piece of one row whose tables are t; fb holds b's chunk as float32. */
static void della_kept(float *restrict d, const void *x, const float *restrict fb, int dt, int64_t i, int n,
                       const keep_t *k, const della_tab_t *restrict t) {
    uint64_t words[CH / 64 + 1];
    const uint8_t *restrict bins = bins_at(t, k, i);
    della_keep_words(words, t, bins, draw_mix(k, i), (uint32_t)i, n);
    const float *restrict s = t->s;
    const int inverse = k->della_inverse;
    int j = 0;
#ifdef __AVX512F__
    DISPATCH(dt, {
        for (; j + 16 <= n; j += 16) {
            const __mmask16 keep = (__mmask16)(words[j >> 6] >> (j & 63));
            const __m512 v = _mm512_sub_ps(ld16(x, DT, i + j), _mm512_loadu_ps(fb + j));
            if (inverse) {
                const __m512i bin = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(bins + j)));
                _mm512_storeu_ps(d + j, _mm512_maskz_mul_ps(keep, v, _mm512_i32gather_ps(bin, s, 4)));
            } else {
                _mm512_storeu_ps(d + j, _mm512_maskz_mov_ps(keep, v));
            }
        }
    });
#endif
    DISPATCH(dt, {
        for (; j < n; j++) {
            const float v = ld(x, DT, i + j) - fb[j];
            d[j] = word_bit(words, j) ? (inverse ? v * s[bins[j]] : v) : 0.0f;
        }
    });
}

/* d[j] = (x - b)[i + j] where bit i + j of mask is set, else 0, for j < n. */
static void masked_delta(float *restrict d, const void *x, const float *restrict fb, int dt, int64_t i, int n,
                         const uint8_t *restrict mask) {
#ifdef __AVX512F__
    if ((i & 7) == 0) {  /* 16 bits of the mask are a register mask */
        int j = 0;
        DISPATCH(dt, {
            for (; j + 16 <= n; j += 16) {
                uint16_t keep;
                memcpy(&keep, mask + ((i + j) >> 3), 2);
                _mm512_storeu_ps(d + j, _mm512_maskz_sub_ps(keep, ld16(x, DT, i + j), _mm512_loadu_ps(fb + j)));
            }
            for (; j < n; j++) { const float v = ld(x, DT, i + j) - fb[j]; d[j] = bit(mask, i + j) ? v : 0.0f; }
        });
        return;
    }
#endif
    uint8_t flag[CH + 8];
    const int64_t first = i & ~(int64_t)7, skip = i - first;  /* expand whole bytes, from i's */
    for (int64_t k = 0; k < (skip + n + 7) / 8; k++) {
        const uint8_t byte = mask[(first >> 3) + k];
#ifdef __BMI2__
        const uint64_t spread = _pdep_u64(byte, 0x0101010101010101ull);  /* bit l to byte l */
        memcpy(flag + 8 * k, &spread, 8);
#else
        for (int l = 0; l < 8; l++) flag[8 * k + l] = (byte >> l) & 1;
#endif
    }
    const uint8_t *restrict f = flag + skip;
    DISPATCH(dt, { for (int j = 0; j < n; j++) { const float v = ld(x, DT, i + j) - fb[j]; d[j] = f[j] ? v : 0.0f; } });
}

/* How many elements from i the next chunk holds: up to the next multiple of CH (so a chunk
 * never straddles a 2^32 index boundary), stop, and the end of i's row when row_len > 0. */
INLINE int chunk_len(int64_t i, int64_t stop, int64_t row_len) {
    int64_t n = CH - (i & (CH - 1));
    if (stop - i < n) n = stop - i;
    if (row_len > 0 && (i / row_len + 1) * row_len - i < n) n = (i / row_len + 1) * row_len - i;
    return (int)n;
}

/* The rows DELLA rules rank within (0: no DELLA rule); every rule's tensor has the same shape. */
static int64_t della_row_len(const keep_t *keeps, int M) {
    for (int m = 0; m < M; m++)
        if (keeps[m].della) return keeps[m].row_len;
    return 0;
}

/* Splits [i, i + n) at the rule's cut indices into at most 3 segments over which the
 * thresholds are constant. Returns the number of segments. */
static int segments(const keep_t *k, int64_t i, int n, int64_t *bounds, float *lo, float *hi) {
    int64_t cuts[2] = {k->low_cut, k->high_cut};
    if (cuts[0] > cuts[1]) { int64_t t = cuts[0]; cuts[0] = cuts[1]; cuts[1] = t; }
    int s = 0;
    bounds[0] = i;
    for (int c = 0; c < 2; c++)
        if (cuts[c] > bounds[s] && cuts[c] < i + n) bounds[++s] = cuts[c];
    bounds[++s] = i + n;
    for (int j = 0; j < s; j++) {
        lo[j] = bounds[j] < k->low_cut ? k->low_head : k->low_tail;
        hi[j] = bounds[j] < k->high_cut ? k->high_head : k->high_tail;
    }
    return s;
}

/* keep(x - b) for one model over [i, i + n): into d unless d is NULL, and added to acc
 * (acc += coef · keep(x - b), a fused multiply-add) unless acc is NULL. fb holds b's chunk
 * as float32 (zeros when there is no base). */
static void kept_delta(float *restrict d, float *restrict acc, const void *x, const float *restrict fb, int dt,
                       int64_t i, int n, const keep_t *k, const della_tab_t *tab) {
    if (k->della) {
        float kept[CH];
        float *restrict dst = d ? d : kept;
        della_kept(dst, x, fb, dt, i, n, k, tab);
        if (acc) for (int j = 0; j < n; j++) acc[j] = fmaf(dst[j], k->coef, acc[j]);
        return;
    }
    int64_t bounds[4];
    float los[3], his[3];
    int ns = segments(k, i, n, bounds, los, his);
    const float c = k->coef, density = k->density;
    const uint32_t mixed = draw_mix(k, i), i0 = (uint32_t)i;
    const int random = k->random;
    const uint8_t *restrict mask = k->mask;
    for (int s = 0; s < ns; s++) {
        const int a = (int)(bounds[s] - i), e = (int)(bounds[s + 1] - i);
        const float lo = los[s], hi = his[s];
#define KEPT(j) ({ float v_ = ld(x, DT, i + (j)) - fb[j], m_ = fabsf(v_);                           \
                   int keep_ = (m_ > lo) & (m_ <= hi);                                              \
                   if (random) keep_ &= draw(mixed, i0 + (uint32_t)(j)) < density;                 \
                   if (mask) keep_ &= bit(mask, i + (j));                                          \
                   keep_ ? v_ : 0.0f; })
        DISPATCH(dt, {
            if (d && acc) for (int j = a; j < e; j++) { float v = KEPT(j); d[j] = v; acc[j] = fmaf(v, c, acc[j]); }
            else if (d) for (int j = a; j < e; j++) d[j] = KEPT(j);
            else for (int j = a; j < e; j++) acc[j] = fmaf(KEPT(j), c, acc[j]);
        });
#undef KEPT
    }
}

static void load_base(float *restrict fb, const void *b, int dt, int64_t i, int n) {
    if (!b) { memset(fb, 0, (size_t)n * 4); return; }
    DISPATCH(dt, { for (int j = 0; j < n; j++) fb[j] = ld(b, DT, i + j); });
}

static void magnitudes(float *restrict m, const void *x, const void *b, int dt, int64_t i, int n) {
    if (b) DISPATCH(dt, { for (int j = 0; j < n; j++) m[j] = fabsf(ld(x, DT, i + j) - ld(b, DT, i + j)); });
    else DISPATCH(dt, { for (int j = 0; j < n; j++) m[j] = fabsf(ld(x, DT, i + j)); });
}

/* Appends the d[k] with hit[k] set (k < n) to vals; returns the new count. */
static int64_t compact(const float *restrict d, const uint8_t *restrict hit, int n, float *restrict vals,
                       int64_t count) {
#ifdef __AVX512F__
    /* Compress in registers and store whole vectors (the caller leaves room for n + 16
     * values): the memory form of vcompress is microcoded and ~50x slower on AMD Zen 4. */
    int k = 0;
    for (; k + 16 <= n; k += 16) {
        __m128i bytes = _mm_loadu_si128((const __m128i *)(hit + k));
        __mmask16 mask = _mm_test_epi8_mask(bytes, bytes);
        if (!mask) continue;
        _mm512_storeu_ps(vals + count, _mm512_maskz_compress_ps(mask, _mm512_loadu_ps(d + k)));
        count += __builtin_popcount(mask);
    }
    for (; k < n; k++) { vals[count] = d[k]; count += hit[k]; }
#else
    for (int k = 0; k < n; k++) { vals[count] = d[k]; count += hit[k]; }  /* branch-free */
#endif
    return count;
}

#ifdef __AVX512F__
/* Appends the d[k] with l < d[k] < h (k < n) to vals; returns the new count. Whole vectors
 * are stored (room for n + 16 values), as in compact. */
static int64_t gather_between(const float *restrict d, int n, float l, float h, float *restrict vals, int64_t count) {
    const __m512 vl = _mm512_set1_ps(l), vh = _mm512_set1_ps(h);
    int k = 0;
    for (; k + 16 <= n; k += 16) {
        const __m512 v = _mm512_loadu_ps(d + k);
        const __mmask16 in = _mm512_cmp_ps_mask(v, vl, _CMP_GT_OQ) & _mm512_cmp_ps_mask(v, vh, _CMP_LT_OQ);
        _mm512_storeu_ps(vals + count, _mm512_maskz_compress_ps(in, v));
        count += __builtin_popcount(in);
    }
    for (; k < n; k++) { vals[count] = d[k]; count += (d[k] > l) & (d[k] < h); }
    return count;
}
#endif

/* lt[j] += #(d < piv[j]), le[j] += #(d <= piv[j]) over n magnitudes, three pivots at a
 * time with named accumulators, so that the loop over d vectorizes with the counts in
 * registers (an inner loop over an array of counts would be vectorized the wrong way). */
static void count_pivots(int P, const float *restrict d, int n, const float *piv, int64_t *lt, int64_t *le) {
    int j = 0;
    for (; j + 3 <= P; j += 3) {
        const float p0 = piv[j], p1 = piv[j + 1], p2 = piv[j + 2];
        int32_t l0 = 0, l1 = 0, l2 = 0, e0 = 0, e1 = 0, e2 = 0;
        for (int k = 0; k < n; k++) {
            const float v = d[k];
            l0 += v < p0; e0 += v <= p0;
            l1 += v < p1; e1 += v <= p1;
            l2 += v < p2; e2 += v <= p2;
        }
        lt[j] += l0; lt[j + 1] += l1; lt[j + 2] += l2;
        le[j] += e0; le[j + 1] += e1; le[j + 2] += e2;
    }
    for (; j < P; j++) {
        const float p0 = piv[j];
        int32_t l0 = 0, e0 = 0;
        for (int k = 0; k < n; k++) { l0 += d[k] < p0; e0 += d[k] <= p0; }
        lt[j] += l0;
        le[j] += e0;
    }
}

/* One selection pass over [start, stop) for M models at once (the base is read once):
 * with v = |x_m - b|, per model m, block blk (global index; nblocks in all) and pivot j,
 *   lt[(m·nblocks + blk)·P + j] = #(v < piv[m·P + j]),  le[...] = #(v <= piv[m·P + j]);
 * and for each of the model's G intervals g, the v with lo[m·G+g] < v < hi[m·G+g], in index
 * order, into vals + (m·G+g)·cap (room for cap each), their number into found[m·G+g], or
 * cap + 1 once they may not fit (counting goes on), and how many each block gave into
 * per_block[(m·G+g)·nblocks + blk] (M·G ≤ 64). */
void sel_pass(const void *const *xs, int M, const void *b, int dt, int64_t start, int64_t stop, int64_t nblocks,
              const float *piv, int P, int64_t *lt, int64_t *le, int G, const float *lo, const float *hi,
              float *vals, int64_t cap, int64_t *found, int64_t *per_block) {
    float fb[CH], d[CH];
    uint8_t hit[CH];
    for (int g = 0; g < M * G; g++) found[g] = 0;
    for (int64_t blk0 = start; blk0 < stop; blk0 += BLOCK) {
        int64_t blk = blk0 / BLOCK, blk_end = blk0 + BLOCK < stop ? blk0 + BLOCK : stop;
        int64_t before[64];
        for (int g = 0; g < M * G && g < 64; g++) before[g] = found[g];
        for (int m = 0; m < M; m++)
            for (int j = 0; j < P; j++) lt[(m * nblocks + blk) * P + j] = le[(m * nblocks + blk) * P + j] = 0;
        for (int64_t i = blk0; i < blk_end; i += CH) {
            int n = (int)(blk_end - i < CH ? blk_end - i : CH);
            load_base(fb, b, dt, i, n);
            for (int m = 0; m < M; m++) {
                const void *x = xs[m];
                DISPATCH(dt, { for (int k = 0; k < n; k++) d[k] = fabsf(ld(x, DT, i + k) - fb[k]); });
                int64_t *mlt = lt + (m * nblocks + blk) * P, *mle = le + (m * nblocks + blk) * P;
                count_pivots(P, d, n, piv + m * P, mlt, mle);
                for (int g = m * G; g < (m + 1) * G; g++) {
                    if (found[g] > cap) continue;
                    const float l = lo[g], h = hi[g];
#ifdef __AVX512F__
                    if (found[g] + n + 16 <= cap) {  /* room for anything: compare and compress in one go */
                        found[g] = gather_between(d, n, l, h, vals + g * cap, found[g]);
                        continue;
                    }
#endif
                    uint8_t any = 0;
                    for (int k = 0; k < n; k++) { hit[k] = (d[k] > l) & (d[k] < h); any |= hit[k]; }
                    if (!any) continue;
                    if (found[g] + n + 16 > cap) { found[g] = cap + 1; continue; }  /* compact writes up to n + 16 */
                    found[g] = compact(d, hit, n, vals + g * cap, found[g]);
                }
            }
        }
        for (int g = 0; g < M * G && g < 64; g++) per_block[g * nblocks + blk] = found[g] - before[g];
    }
}

/* The r-th smallest (0-based, r < n) of n non-negative floats, and how many of them are
 * smaller (*less) and equal (*equal). A radix select on the bit patterns, which order
 * non-negative floats: a histogram of 4096 buckets over the values' range of patterns, then
 * the bucket holding r is gathered into scratch (room for n) and narrowed the same way. Each
 * round is a pass or two over the values whatever their ties, which is why it beats an
 * introselect on the gathered magnitudes of bf16 checkpoints (a few hundred distinct values). */
#define SELECT_BUCKETS 4096
float select_kth(const float *vals, int64_t n, int64_t r, float *scratch, int64_t *less, int64_t *equal) {
    const uint32_t *u = (const uint32_t *)vals;
    static __thread uint32_t hist[SELECT_BUCKETS];
    *less = 0;
    for (;;) {
        uint32_t lo = UINT32_MAX, hi = 0;
        for (int64_t j = 0; j < n; j++) {  /* vectorized */
            lo = u[j] < lo ? u[j] : lo;
            hi = u[j] > hi ? u[j] : hi;
        }
        int shift = 0;
        while (((hi - lo) >> shift) >= SELECT_BUCKETS) shift++;
        memset(hist, 0, sizeof hist);
        for (int64_t j = 0; j < n; j++) hist[(u[j] - lo) >> shift]++;
        int bucket = 0;
        for (; (int64_t)hist[bucket] <= r; bucket++) r -= hist[bucket], *less += hist[bucket];
        const uint32_t first = lo + ((uint32_t)bucket << shift);
        if (shift == 0) {
            float t;
            memcpy(&t, &first, 4);
            *equal = hist[bucket];
            return t;
        }
        const uint32_t last = first + ((1u << shift) - 1);
        uint32_t *out = (uint32_t *)scratch;
        int64_t m = 0;
        for (int64_t j = 0; j < n; j++) {  /* branch-free compaction */
            out[m] = u[j];
            m += (u[j] >= first) & (u[j] <= last);
        }
        u = out;
        n = m;
    }
}

/* magnitudes |x[j] - b[j]| for the runs of `run` consecutive indices starting at first,
 * first + stride, ... (m runs, each inside the tensor), into out (m·run values). Runs
 * rather than single elements: one cache line then serves many samples. */
void sample_mags(const void *x, const void *b, int dt, int64_t first, int64_t stride, int64_t m, int run, float *out) {
    for (int64_t r = 0; r < m; r++) {
        const int64_t i = first + r * stride;
        float *o = out + r * run;
        if (b) DISPATCH(dt, { for (int j = 0; j < run; j++) o[j] = fabsf(ld(x, DT, i + j) - ld(b, DT, i + j)); });
        else DISPATCH(dt, { for (int j = 0; j < run; j++) o[j] = fabsf(ld(x, DT, i + j)); });
    }
}

/* The global index of the nth (1-based) element of [start, stop) with |x - b| == t, or -1. */
int64_t nth_equal(const void *x, const void *b, int dt, int64_t start, int64_t stop, float t, int64_t nth) {
    float d[CH];
    for (int64_t i = start; i < stop; i += CH) {
        int n = (int)(stop - i < CH ? stop - i : CH);
        magnitudes(d, x, b, dt, i, n);
        for (int k = 0; k < n; k++)
            if (d[k] == t && --nth == 0) return i + k;
    }
    return -1;
}

/* Σ|v| over n floats, in 16 interleaved partial sums (a vector register's worth: a single
 * running float sum cannot be vectorized without reordering it). */
static float abs_sum(const float *restrict v, int n) {
    float part[16] = {0};
    int k = 0;
    for (; k + 16 <= n; k += 16)
        for (int l = 0; l < 16; l++) part[l] += fabsf(v[k + l]);
    for (; k < n; k++) part[k & 15] += fabsf(v[k]);
    float s = 0.0f;
    for (int l = 0; l < 16; l++) s += part[l];
    return s;
}

/* Per block of [start, stop): total[b] = Σ|d|, kept[b] = Σ|keep(d)| for d = x - b (not DELLA
 * or DARE rules under an L1 rescale: drop_masks sums theirs). */
void l1_sums(const void *x, const void *b, int dt, int64_t start, int64_t stop, const keep_t *rule,
             double *total, double *kept) {
    float fb[CH], d[CH];
    keep_t all = *rule;
    all.low_cut = all.high_cut = 0;
    all.low_tail = -1.0f;
    all.high_tail = INFINITY;
    all.random = 0;
    all.mask = NULL;
    for (int64_t blk0 = start; blk0 < stop; blk0 += BLOCK) {
        int64_t blk = blk0 / BLOCK, blk_end = blk0 + BLOCK < stop ? blk0 + BLOCK : stop;
        double t = 0.0, s = 0.0;
        for (int64_t i = blk0; i < blk_end; i += CH) {
            int n = (int)(blk_end - i < CH ? blk_end - i : CH);
            load_base(fb, b, dt, i, n);
            kept_delta(d, NULL, x, fb, dt, i, n, &all, NULL);
            t += abs_sum(d, n);
            kept_delta(d, NULL, x, fb, dt, i, n, rule, NULL);
            s += abs_sum(d, n);
        }
        total[blk] = t;
        kept[blk] = s;
    }
}

/* Bits [at, at + n) of bits := bits [0, n) of words: whole bytes where `at` is a multiple of 8. */
static void put_words(uint8_t *restrict bits, int64_t at, const uint64_t *restrict words, int n) {
    int j = 0;
    if ((at & 7) == 0) {
        memcpy(bits + (at >> 3), words, (size_t)(n >> 3));  /* little-endian: bit j of a word is bit j of its bytes */
        j = n & ~7;
    }
    for (; j < n; j++) {
        const int64_t k = at + j;
        bits[k >> 3] = (uint8_t)((bits[k >> 3] & ~(1u << (k & 7))) | (unsigned)word_bit(words, j) << (k & 7));
    }
}

/* *total += Σ|d|, *kept += Σ|d| where bit j of words is set, d = (x - b)[i + j] (j < n; fb: b's
 * chunk as float32): sixteen partial sums added in order, as abs_sum. */
static void l1_pair(double *total, double *kept, const void *x, const float *restrict fb, int dt, int64_t i, int n,
                    const uint64_t *restrict words) {
    float part_t[16] = {0}, part_k[16] = {0};
    int j = 0;
#ifdef __AVX512F__
    __m512 t = _mm512_setzero_ps(), k = _mm512_setzero_ps();
    DISPATCH(dt, {
        for (; j + 16 <= n; j += 16) {
            const __m512 a = _mm512_abs_ps(_mm512_sub_ps(ld16(x, DT, i + j), _mm512_loadu_ps(fb + j)));
            t = _mm512_add_ps(t, a);
            k = _mm512_mask_add_ps(k, (__mmask16)(words[j >> 6] >> (j & 63)), k, a);
        }
    });
    _mm512_storeu_ps(part_t, t);
    _mm512_storeu_ps(part_k, k);
#endif
    DISPATCH(dt, {
        for (; j < n; j++) {
            const float a = fabsf(ld(x, DT, i + j) - fb[j]);
            part_t[j & 15] += a;
            part_k[j & 15] += word_bit(words, j) ? a : 0.0f;
        }
    });
    float st_ = 0.0f, sk = 0.0f;
    for (int l = 0; l < 16; l++) st_ += part_t[l], sk += part_k[l];
    *total += st_;
    *kept += sk;
}

/* The random drops of M models (DELLA or DARE rules) over [start, stop) (block-aligned), for
 * an L1 rescale, which needs the norms before mixing: bit i of masks[m] := entry i is kept,
 * and per 64K block (global index, nblocks in all) total[m·nblocks + blk] = Σ|d|,
 * kept[...] = Σ|kept d| of d = x_m - b. The mix then reads the bits (keep_t.mask) instead of
 * drawing (and, for DELLA, ranking every row) a second time; the sums are l1_sums'. */
void drop_masks(const void *const *xs, int M, const void *b, int dt, int64_t start, int64_t stop, int64_t nblocks,
                const keep_t *keeps, uint8_t *const *masks, double *total, double *kept) {
    const int64_t row_len = della_row_len(keeps, M);
    float fb[CH];
    uint64_t words[CH / 64 + 1];
    uint32_t thr[M];
    for (int m = 0; m < M; m++) thr[m] = draw_threshold(keeps[m].density);
    della_tab_t *tabs = row_len ? della_tabs(M, row_len) : NULL;
    if (row_len && !tabs) return;
    for (int64_t blk0 = start; blk0 < stop; blk0 += BLOCK) {  /* models innermost: the base is read once */
        int64_t blk = blk0 / BLOCK, blk_end = blk0 + BLOCK < stop ? blk0 + BLOCK : stop;
        for (int m = 0; m < M; m++) total[m * nblocks + blk] = kept[m * nblocks + blk] = 0.0;
        for (int64_t i = blk0, n; i < blk_end; i += n) {
            n = chunk_len(i, blk_end, row_len);
            load_base(fb, b, dt, i, (int)n);
            for (int m = 0; m < M; m++) {
                const keep_t *k = &keeps[m];
                if (k->della) {
                    della_tab_t *tab = &tabs[m];
                    if (tab->row != i / row_len) della_tables(tab, k, xs[m], b, dt, i / row_len);
                    della_keep_words(words, tab, bins_at(tab, k, i), draw_mix(k, i), (uint32_t)i, (int)n);
                } else {
                    random_keep_words(words, draw_mix(k, i), (uint32_t)i, (int)n, thr[m]);
                }
                put_words(masks[m], i, words, (int)n);
                l1_pair(&total[m * nblocks + blk], &kept[m * nblocks + blk], xs[m], fb, dt, i, (int)n, words);
            }
        }
    }
    della_tabs_free(tabs, M);
}

/* mix() for any number of models: a chunk at a time, model by model through L1 buffers. */
/* out = b + Σ_i coef_i keep_i(x_i - b)          (consensus 0; b NULL: out = Σ_i coef_i x_i)
 * out = b + lambda · Σ_i a_i coef_i keep_i(d_i) / D   (consensus 1), a_i = [coef_i keep_i(d_i) has the
 *   sign of Σ_j coef_j keep_j(d_j)] (a -0.0 sum counts as negative), D = Σ_i a_i weight_i (0 -> 1)
 *   when normalize, else 1.
 * Sums are fused multiply-adds in model order, the order (and rounding) of the torch code in
 * merging/sparsify.py, so both elect the same sign where a sum cancels to about zero.
 * Returns how many stored values are NaN or inf. */
static int64_t mix_general(const void *const *xs, int M, const void *b, int dt, void *out, int out_dt,
                           int64_t start, int64_t stop, const keep_t *keeps, int consensus, int normalize,
                           float lambda) {
    const int64_t row_len = della_row_len(keeps, M);
    float *buf = (float *)malloc((size_t)(M + 4) * CH * sizeof(float));
    della_tab_t *tabs = row_len ? della_tabs(M, row_len) : NULL;
    if (!buf || (row_len && !tabs)) { free(buf); della_tabs_free(tabs, M); return -1; }
    float *fb = buf, *acc = buf + CH, *tmp = buf + 2 * CH, *den = buf + 3 * CH, *ds = buf + 4 * CH;
    int64_t bad = 0;
    for (int64_t i = start, n_; i < stop; i += n_) {
        const int n = chunk_len(i, stop, row_len);
        n_ = n;
        for (int m = 0; m < M; m++)
            if (keeps[m].della && tabs[m].row != i / row_len)
                della_tables(&tabs[m], &keeps[m], xs[m], b, dt, i / row_len);
        load_base(fb, b, dt, i, n);
        if (!consensus) {
            memcpy(acc, fb, (size_t)n * 4);
            for (int m = 0; m < M; m++) kept_delta(NULL, acc, xs[m], fb, dt, i, n, &keeps[m], tabs ? &tabs[m] : NULL);
        } else {
            memset(acc, 0, (size_t)n * 4);  /* the sign sum */
            for (int m = 0; m < M; m++)
                kept_delta(ds + (size_t)m * CH, acc, xs[m], fb, dt, i, n, &keeps[m], tabs ? &tabs[m] : NULL);
            memset(tmp, 0, (size_t)n * 4);
            memset(den, 0, (size_t)n * 4);
            const uint32_t *restrict ua = (const uint32_t *)acc;
            for (int m = 0; m < M; m++) {
                const float *restrict d = ds + (size_t)m * CH;
                const uint32_t *restrict ud = (const uint32_t *)d;
                const float c = keeps[m].coef, mag = fabsf(c), w = keeps[m].weight;
                /* sgn(c·d) = sgn(sum) ⇔ the sign bits of d, c and the sum xor to 0 (d ≠ 0, c ≠ 0) */
                const uint32_t flip = c < 0.0f ? 0x80000000u : 0u;
                const int live = c != 0.0f;
                for (int k = 0; k < n; k++) {
                    int agree = live & (d[k] != 0.0f) & (((ud[k] ^ ua[k] ^ flip) & 0x80000000u) == 0);
                    tmp[k] = fmaf(mag, agree ? fabsf(d[k]) : 0.0f, tmp[k]);
                    den[k] += agree ? w : 0.0f;
                }
            }
            for (int k = 0; k < n; k++) {
                float g = copysignf(1.0f, acc[k]);
                float r = normalize ? g / (den[k] == 0.0f ? 1.0f : den[k]) : g;
                acc[k] = fmaf(tmp[k] * r, lambda, fb[k]);
            }
        }
        int nb = 0;
        DISPATCH(out_dt, { for (int k = 0; k < n; k++) nb += st(out, DT, i + k, acc[k]); });
        bad += nb;
    }
    free(buf);
    della_tabs_free(tabs, M);
    return bad;
}

/* mix() for M ≤ 4 models with M, the input dtype, sign election and random drops known at
 * compile time: every element is loaded, masked, elected and mixed in registers in one
 * loop, with no L1 round trips between models. Same arithmetic, in the same order, as
 * mix_general. */
INLINE int64_t mix_fused(const int M, const int DT, const int RANDOM, const int DELLA, const int CONSENSUS,
                         const void *const *xs, const void *b, void *out, int out_dt, int64_t start, int64_t stop,
                         const keep_t *keeps, int normalize, float lambda) {
    float res[CH], fb[CH];
    int64_t bad = 0;
    const int64_t row_len = DELLA ? della_row_len(keeps, M) : 0;
    della_tab_t *tabs = NULL;
    float kept[DELLA ? 4 : 1][CH];
    if (DELLA && row_len && !(tabs = della_tabs(M, row_len))) return -1;  /* masks alone need no tables */
    for (int64_t i = start, n_; i < stop; i += n_) {
        const int n = chunk_len(i, stop, row_len);
        n_ = n;
        const uint32_t i0 = (uint32_t)i;
        load_base(fb, b, DT, i, n);
        if (DELLA)  /* every model's kept delta into L1 first: the table lookups vectorize apart */
            for (int m = 0; m < M; m++) {
                if (keeps[m].mask) { masked_delta(kept[m], xs[m], fb, DT, i, n, keeps[m].mask); continue; }
                if (!keeps[m].della) { kept_delta(kept[m], NULL, xs[m], fb, DT, i, n, &keeps[m], NULL); continue; }
                if (tabs[m].row != i / row_len) della_tables(&tabs[m], &keeps[m], xs[m], b, DT, i / row_len);
                della_kept(kept[m], xs[m], fb, DT, i, n, &keeps[m], &tabs[m]);
            }
        int low_cut[4], high_cut[4];
        uint32_t mixed[4];
        float coef[4], mag[4], sign_c[4], weight[4], lh[4], lt[4], hh[4], ht[4], density[4];
        int live[4];
        for (int m = 0; m < M; m++) {
            const keep_t *k = &keeps[m];
            low_cut[m] = (int)(k->low_cut <= i ? 0 : k->low_cut >= i + n ? n : k->low_cut - i);
            high_cut[m] = (int)(k->high_cut <= i ? 0 : k->high_cut >= i + n ? n : k->high_cut - i);
            lh[m] = k->low_head; lt[m] = k->low_tail; hh[m] = k->high_head; ht[m] = k->high_tail;
            coef[m] = k->coef; mag[m] = fabsf(k->coef); weight[m] = k->weight; density[m] = k->density;
            sign_c[m] = k->coef < 0.0f ? -1.0f : 1.0f;
            live[m] = k->coef != 0.0f;
            mixed[m] = RANDOM && k->random ? draw_mix(k, i) : 0u;
        }
        for (int j = 0; j < n; j++) {
            const float bv = fb[j];
            float d[4], s = CONSENSUS ? 0.0f : bv;
            for (int m = 0; m < M; m++) {
                if (DELLA) {
                    d[m] = kept[m][j];
                } else {
                    float v = ld(xs[m], DT, i + j) - bv, a = fabsf(v);
                    float lo = j < low_cut[m] ? lh[m] : lt[m], hi = j < high_cut[m] ? hh[m] : ht[m];
                    int keep = (a > lo) & (a <= hi);
                    if (RANDOM) keep &= (keeps[m].random == 0) | (draw(mixed[m], i0 + (uint32_t)j) < density[m]);
                    d[m] = keep ? v : 0.0f;
                }
                s = fmaf(d[m], coef[m], s);
            }
            if (CONSENSUS) {
                /* sgn(c·d) = γ = sgn(s) (−0.0 negative) ⇔ sgn(c)·γ·d > 0, exact: only signs change */
                const float g = copysignf(1.0f, s);
                float acc = 0.0f, den = 0.0f;
                for (int m = 0; m < M; m++) {
                    float t = d[m] * (sign_c[m] * g);
                    int agree = live[m] & (t > 0.0f);
                    acc = fmaf(mag[m], agree ? t : 0.0f, acc);
                    den += agree ? weight[m] : 0.0f;
                }
                float r = normalize ? g / (den == 0.0f ? 1.0f : den) : g;
                res[j] = fmaf(acc * r, lambda, bv);
            } else {
                res[j] = s;
            }
        }
        int nb = 0;
        DISPATCH(out_dt, { for (int k = 0; k < n; k++) nb += st(out, DT, i + k, res[k]); });
        bad += nb;
    }
    della_tabs_free(tabs, M);
    return bad;
}

#define MIX_FUSED(M_) \
    DISPATCH(dt, { \
        if (della && consensus) return mix_fused(M_, DT, 0, 1, 1, xs, b, out, out_dt, start, stop, keeps, normalize, lambda); \
        if (della) return mix_fused(M_, DT, 0, 1, 0, xs, b, out, out_dt, start, stop, keeps, normalize, lambda); \
        if (random && consensus) return mix_fused(M_, DT, 1, 0, 1, xs, b, out, out_dt, start, stop, keeps, normalize, lambda); \
        if (random) return mix_fused(M_, DT, 1, 0, 0, xs, b, out, out_dt, start, stop, keeps, normalize, lambda); \
        if (consensus) return mix_fused(M_, DT, 0, 0, 1, xs, b, out, out_dt, start, stop, keeps, normalize, lambda); \
        return mix_fused(M_, DT, 0, 0, 0, xs, b, out, out_dt, start, stop, keeps, normalize, lambda); \
    })

/* out = b + Σ_i coef_i keep_i(x_i - b)          (consensus 0; b NULL: out = Σ_i coef_i x_i)
 * out = b + lambda · Σ_i a_i coef_i keep_i(d_i) / D   (consensus 1); see mix_general.
 * Returns how many stored values are NaN or inf. */
int64_t mix(const void *const *xs, int M, const void *b, int dt, void *out, int out_dt, int64_t start,
            int64_t stop, const keep_t *keeps, int consensus, int normalize, float lambda) {
    int random = 0, della = 0;
    for (int m = 0; m < M; m++) random |= keeps[m].random, della |= keeps[m].della | (keeps[m].mask != NULL);
    if (della && random) return mix_general(xs, M, b, dt, out, out_dt, start, stop, keeps, consensus, normalize, lambda);
    switch (M) {
    case 1: MIX_FUSED(1); break;
    case 2: MIX_FUSED(2); break;
    case 3: MIX_FUSED(3); break;
    case 4: MIX_FUSED(4); break;
    }
    return mix_general(xs, M, b, dt, out, out_dt, start, stop, keeps, consensus, normalize, lambda);
}
