/* The K-quants (Q4_K, Q5_K, Q6_K): super-blocks of 256 weights, in the 4-row interleaved layout
   of quants.h.

     Q4_K (144 B): fp16 d, fp16 dmin, 12 B of 6-bit scales and mins, 128 B of 4-bit q;
                   w = (d*sc)*q - dmin*m, one (sc, m) per sub-block of 32.
     Q5_K (176 B): as Q4_K plus 32 B holding the 5th bit of q (bit s of byte l: element l of
                   sub-block s).
     Q6_K (210 B): 128 B low nibbles, 64 B high 2-bit pairs, 16 int8 scales, fp16 d;
                   w = (d*sc)*(q-32), one sc per sub-block of 16.

   Each super-block row is first decoded into 256 small integers plus one fp32 scale per
   sub-block, then multiplied by x in fp32 (the scale applied once per sub-block sum). The mins of
   Q4_K/Q5_K come off the caller's per-16 activation sums xs: one FMA per super-block row. Row r
   lives in group r/4, slot r%4: block i at group + (i*4 + r%4) * block bytes.

   dequant_row reproduces gguf's float order exactly in both builds (the AVX2 one does the plain-C
   decoder's operations 8 at a time); the dots only match it up to summation order. */
#include "quants.h"

#define QK 256

/* Bytes of one super-block of `type` (0: not a K-quant). */
static int kq_block_bytes(int type) {
  switch (type) {
    case GT_Q4_K: return 144;
    case GT_Q5_K: return 176;
    case GT_Q6_K: return 210;
    default: return 0;
  }
}

/* fp16 -> fp32, exact for every input (the same bits numpy's astype gives): normals rebias the
   exponent, subnormals are m * 2^-24 (exact in fp32), inf/NaN keep their payload. */
static inline float kq_h2f(const uint8_t* p) {
  uint16_t h = (uint16_t)(p[0] | (p[1] << 8));
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1Fu, m = h & 0x3FFu, bits;
  if (e == 0x1F) {
    bits = sign | 0x7F800000u | (m << 13);
  } else if (e) {
    bits = sign | ((e + 112u) << 23) | (m << 13);
  } else {
    float f = (float)m * 0x1p-24f;
    memcpy(&bits, &f, 4);
    bits |= sign;
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

static inline uint32_t kq_u32(const uint8_t* p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}

/* The 8 scales and 8 mins of a Q4_K/Q5_K block (6 bits each, packed in 12 bytes as gguf's
   get_scale_min unpacks them) as 16 bytes: scales then mins. Four words, byte-parallel. */
static inline void kq_scale_min(const uint8_t* s12, uint8_t out[16]) {
  uint32_t u0 = kq_u32(s12), u1 = kq_u32(s12 + 4), u2 = kq_u32(s12 + 8);
  uint32_t v[4] = {
    u0 & 0x3F3F3F3Fu,
    (u2 & 0x0F0F0F0Fu) | ((u0 >> 2) & 0x30303030u),
    u1 & 0x3F3F3F3Fu,
    ((u2 >> 4) & 0x0F0F0F0Fu) | ((u1 >> 2) & 0x30303030u),
  };
  memcpy(out, v, 16);
}

static inline const uint8_t* kq_block(const Wt* w, int r, int i, int bb) {
  return w->data + (size_t)(r >> 2) * 4 * (size_t)w->row_bytes + ((size_t)i * 4 + (r & 3)) * bb;
}

void jcl_kq_dequant_row(const Wt* w, int r, float* out) {
  jcl_kq_dequant_part(w, r, 0, w->K / QK, out);
}

#if JCL_AVX2

/* The AVX2 dot hands the weights to the fp32 arithmetic as fp16 bit patterns equal to small
   integers n (q, or 16q), i.e. subnormal halves n * 2^-24 (exact): vcvtph2ps from memory widens
   and converts 8 of them in one uop, where bytes would need a widening shuffle plus an int->float
   convert, and those uops per 8 weights are what bounds this loop. Decoding writes the halves
   with in-lane byte unpacks, whose second operand supplies the high byte for free: 16q = 16*lo +
   256*hi takes Q5_K's 5th bit and Q6_K's 2 high bits without shifting them into place. The
   2^24 (or 2^20 for 16q) goes into the sub-block scales (exact power-of-two scaling).
   vcvtph2ps ignores MXCSR.DAZ; the products only leave the normal range for |x| < 2^-102.
   Q6_K's q stays unsigned (0..63) and its -32 comes off xs like the mins, two FMAs per row. */
#define KQ_2P24 16777216.0f
#define KQ_2P20 1048576.0f

static inline float kq_hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

static inline __m256 kq_h8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_load_si128((const __m128i*)p));
}
static inline __m256 kq_u8f(const uint8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)p)));
}
static inline __m256i kq_ld(const uint8_t* p) { return _mm256_loadu_si256((const __m256i*)p); }

/* The super-block group 4 ahead (a few KB) into the cache while this one computes: with the
   hardware prefetcher alone, the loop waits on memory when the weights stream from DRAM.
   Prefetches never fault, so running past the end of the weight is harmless (hence the integer
   address arithmetic). `bytes` is one group's super-block: 4 blocks. */
static inline void kq_prefetch(const uint8_t* grp, int bytes) {
  const uintptr_t ahead = (uintptr_t)grp + 4 * (uintptr_t)bytes;
  for (int k = 0; k < bytes; k += 64)
    _mm_prefetch((const char*)(ahead + (uintptr_t)k), _MM_HINT_T0);
}

/* 32 elements, low bytes lo and high bytes hi, -> 32 halves at h, in the order the in-lane
   unpacks leave them: elements 0-7, 16-23, 8-15, 24-31. */
static inline void kq_st_h(uint16_t* h, __m256i lo, __m256i hi) {
  _mm256_store_si256((__m256i*)h, _mm256_unpacklo_epi8(lo, hi));
  _mm256_store_si256((__m256i*)(h + 16), _mm256_unpackhi_epi8(lo, hi));
}

/* The 32-bit words at p + j*bb (j = 0..3) as 8 fp16 -> 8 floats: the super-block scales of a
   group's 4 rows in one conversion. */
static inline __m256 kq_h2f_rows(const uint8_t* p, int bb) {
  return _mm256_cvtph_ps(_mm_setr_epi32((int)kq_u32(p), (int)kq_u32(p + bb),
                                        (int)kq_u32(p + 2 * bb), (int)kq_u32(p + 3 * bb)));
}

/* kq_scale_min for the blocks at b and b + bb at once (one per 128-bit lane): 32 bytes, each
   row's 8 scales then 8 mins. The words are u0, u1, u2 of kq_scale_min. */
static inline void kq_scale_min2(const uint8_t* b, int bb, uint8_t out[32]) {
  _mm256_store_si256((__m256i*)out, jcl_kq_scale_min2(b, bb));
}

/* One Q4_K/Q5_K block row -> 256 halves (sub-block s at h + 32s): Q4_K q for even sub-blocks
   (low nibbles) and 16q for odd ones (high nibbles, masked in place); Q5_K 16q throughout. */
static inline void kq_expand45(const uint8_t* b, int q5, uint16_t* h) {
  const __m256i m4 = _mm256_set1_epi8(0x0F), mf0 = _mm256_set1_epi8((char)0xF0);
  const __m256i one = _mm256_set1_epi8(1), z = _mm256_setzero_si256();
  const uint8_t* qs = b + (q5 ? 48 : 16);
  /* qh >> s puts sub-block s's 5th bits at bit 0 of each byte (16-bit shifts spill neighbouring
     bits only into the bits the mask drops). */
  __m256i qh = q5 ? kq_ld(b + 16) : z;
  for (int c = 0; c < 4; c++, qs += 32, h += 64) {
    const __m256i v = kq_ld(qs);
    if (q5) {
      kq_st_h(h, _mm256_and_si256(_mm256_slli_epi16(v, 4), mf0), _mm256_and_si256(qh, one));
      qh = _mm256_srli_epi16(qh, 1);
      kq_st_h(h + 32, _mm256_and_si256(v, mf0), _mm256_and_si256(qh, one));
      qh = _mm256_srli_epi16(qh, 1);
    } else {
      kq_st_h(h, _mm256_and_si256(v, m4), z);
      kq_st_h(h + 32, _mm256_and_si256(v, mf0), z);
    }
  }
}

/* One Q6_K block row -> 256 halves 16q (q = 0..63 unsigned: the -32 comes off the activation
   sums; elements 32c.. at h + 32c), and d*sc*2^20 (16 floats) given d*2^20 at *dp. */
static inline void kq_expand6(const uint8_t* b, const float* dp, uint16_t* h, float* dsc) {
  const __m256 d = _mm256_broadcast_ss(dp);
  _mm256_store_ps(dsc, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
                                            _mm_loadl_epi64((const __m128i*)(b + 192))))));
  _mm256_store_ps(dsc + 8, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
                                                _mm_loadl_epi64((const __m128i*)(b + 200))))));
  const __m256i mf0 = _mm256_set1_epi8((char)0xF0), m3 = _mm256_set1_epi8(3);
  const uint8_t *ql = b, *qhp = b + 128;
  /* Low nibbles to 16*lo in the low byte, 2-bit pairs (= 256 * hi) in the high byte; the masks
     drop what 16-bit shifts carry over from the neighbouring byte. */
  for (int half = 0; half < 2; half++, ql += 64, qhp += 32, h += 128) {
    const __m256i a = kq_ld(ql), c = kq_ld(ql + 32), qh = kq_ld(qhp);
    kq_st_h(h, _mm256_and_si256(_mm256_slli_epi16(a, 4), mf0), _mm256_and_si256(qh, m3));
    kq_st_h(h + 32, _mm256_and_si256(_mm256_slli_epi16(c, 4), mf0),
            _mm256_and_si256(_mm256_srli_epi16(qh, 2), m3));
    kq_st_h(h + 64, _mm256_and_si256(a, mf0), _mm256_and_si256(_mm256_srli_epi16(qh, 4), m3));
    kq_st_h(h + 96, _mm256_and_si256(c, mf0), _mm256_and_si256(_mm256_srli_epi16(qh, 6), m3));
  }
}

/* ---- dequantization: the plain-C jcl_kq_dequant_row's operations, so the same bits, on the
   halves the dot's expanders write: (d*sc) rounded in fp32 once per sub-block and carried with
   the halves' 2^24 or 2^20 (exact), times the half, minus (dmin*m), never fused (the build
   passes -ffp-contract=off). The halves of 32 elements come in kq_st_h order. ---- */

static const int KQ_ORDER[4] = {0, 16, 8, 24};

static void kq_deq45(const uint8_t* b, int q5, float* out) {
  _Alignas(32) uint16_t h[QK];
  kq_expand45(b, q5, h);
  const float d = kq_h2f(b), dmin = kq_h2f(b + 2);
  uint8_t sm[16];
  kq_scale_min(b + 4, sm);
  for (int s = 0; s < 8; s++, out += 32) {
    const float unit = q5 || (s & 1) ? KQ_2P20 : KQ_2P24;  /* 16q or q in the halves */
    const __m256 dsc = _mm256_set1_ps((d * (float)sm[s]) * unit);
    const __m256 dm = _mm256_set1_ps(dmin * (float)sm[8 + s]);
    for (int c = 0; c < 4; c++)
      _mm256_storeu_ps(out + KQ_ORDER[c],
                       _mm256_sub_ps(_mm256_mul_ps(dsc, kq_h8(h + 32 * s + 8 * c)), dm));
  }
}

/* Q6_K: the halves are 16q (q = 0..63), so 16*32 * 2^-24 off each gives 16(q-32) exactly. */
static void kq_deq6(const uint8_t* b, float* out) {
  _Alignas(32) uint16_t h[QK];
  _Alignas(32) float dsc[16];
  const float d = kq_h2f(b + 208) * KQ_2P20;
  kq_expand6(b, &d, h, dsc);
  const __m256 off = _mm256_set1_ps(0x1p-15f);
  for (int c = 0; c < 8; c++, out += 32)
    for (int k = 0; k < 4; k++) {
      const __m256 q = _mm256_sub_ps(kq_h8(h + 32 * c + 8 * k), off);
      _mm256_storeu_ps(out + KQ_ORDER[k], _mm256_mul_ps(_mm256_set1_ps(dsc[2 * c + (k & 1)]), q));
    }
}

void jcl_kq_dequant_part(const Wt* w, int r, int i0, int nb, float* out) {
  const int bb = kq_block_bytes(w->type);
  if (!bb) {
    memset(out, 0, sizeof(float) * (size_t)nb * QK);
    return;
  }
  for (int i = i0; i < i0 + nb; i++, out += QK) {
    const uint8_t* b = kq_block(w, r, i, bb);
    if (w->type == GT_Q6_K) kq_deq6(b, out);
    else kq_deq45(b, w->type == GT_Q5_K, out);
  }
}

/* Row j, elements 32c..32c+31 (kq_st_h order; x0..x3 are x[32c..] in 8s, shared by the rows). */
#define KQ_SUB32(j)                                                        \
  do {                                                                     \
    const uint16_t* p_ = h[j] + 32 * c;                                    \
    __m256 t_ = _mm256_mul_ps(kq_h8(p_), x0);                              \
    t_ = _mm256_fmadd_ps(kq_h8(p_ + 8), x2, t_);                           \
    t_ = _mm256_fmadd_ps(kq_h8(p_ + 16), x1, t_);                          \
    t_ = _mm256_fmadd_ps(kq_h8(p_ + 24), x3, t_);                          \
    acc##j = _mm256_fmadd_ps(_mm256_broadcast_ss(&dsc[j][c]), t_, acc##j); \
  } while (0)

/* The same 32 elements as two Q6_K sub-blocks of 16. */
#define KQ_SUB2x16(j)                                                              \
  do {                                                                             \
    const uint16_t* p_ = h[j] + 32 * c;                                            \
    __m256 t_ = _mm256_mul_ps(kq_h8(p_), x0);                                      \
    __m256 u_ = _mm256_mul_ps(kq_h8(p_ + 8), x2);                                  \
    t_ = _mm256_fmadd_ps(kq_h8(p_ + 16), x1, t_);                                  \
    u_ = _mm256_fmadd_ps(kq_h8(p_ + 24), x3, u_);                                  \
    acc##j = _mm256_fmadd_ps(_mm256_broadcast_ss(&dsc[j][2 * c]), t_, acc##j);     \
    acc##j = _mm256_fmadd_ps(_mm256_broadcast_ss(&dsc[j][2 * c + 1]), u_, acc##j); \
  } while (0)

#define KQ_LOAD_X(c)                                                           \
  const float* xp_ = x + 32 * (c);                                             \
  const __m256 x0 = _mm256_loadu_ps(xp_), x1 = _mm256_loadu_ps(xp_ + 8);       \
  const __m256 x2 = _mm256_loadu_ps(xp_ + 16), x3 = _mm256_loadu_ps(xp_ + 24)

/* Row j's scales to dsc[j] (dp[j] holds its d times the 2^24 or 2^20 of even and odd
   sub-blocks, a pair of floats that vbroadcastsd repeats), its mins term into acc_j, its weights
   to h[j]. */
#define KQ_PREP45(j)                                                                 \
  do {                                                                               \
    const uint8_t* sm_ = sm + 16 * (j);                                              \
    const __m256 d_ = _mm256_castpd_ps(_mm256_broadcast_sd(&dp[j]));                 \
    const __m256 dmin_ = _mm256_broadcast_ss(&dd[2 * (j) + 1]);                      \
    _mm256_store_ps(dsc[j], _mm256_mul_ps(d_, kq_u8f(sm_)));                         \
    acc##j = _mm256_fnmadd_ps(_mm256_mul_ps(dmin_, kq_u8f(sm_ + 8)), xs32, acc##j);  \
    kq_expand45(grp + (j) * bb, q5, h[j]);                                           \
  } while (0)

static inline void kq_dot45(const Wt* w, const uint8_t* grp, int q5, const float* x,
                            const float* xs, float out[4]) {
  const int bb = q5 ? 176 : 144, nb = w->K / QK;
  const float se = q5 ? KQ_2P20 : KQ_2P24;
  const __m256 dscale = _mm256_setr_ps(se, KQ_2P20, se, KQ_2P20, se, KQ_2P20, se, KQ_2P20);
  const __m256i dpair = _mm256_setr_epi32(0, 0, 2, 2, 4, 4, 6, 6);
  _Alignas(32) uint16_t h[4][QK];
  _Alignas(32) uint8_t sm[64];
  _Alignas(32) float dsc[4][8];
  _Alignas(32) float dd[8];
  _Alignas(32) double dp[4];
  __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
  for (int i = 0; i < nb; i++, grp += 4 * bb, x += QK, xs += 16) {
    /* Sums of x over each sub-block of 32, in sub-block order (hadd pairs within lanes, the
       permute puts the lanes back in order). */
    const __m256 xs32 = _mm256_castpd_ps(_mm256_permute4x64_pd(
        _mm256_castps_pd(_mm256_hadd_ps(_mm256_loadu_ps(xs), _mm256_loadu_ps(xs + 8))), 0xD8));
    kq_prefetch(grp, 4 * bb);
    const __m256 dv = kq_h2f_rows(grp, bb); /* d, dmin of each row */
    _mm256_store_ps(dd, dv);
    const __m256 dpv = _mm256_mul_ps(_mm256_permutevar8x32_ps(dv, dpair), dscale);
    _mm256_store_pd(dp, _mm256_castps_pd(dpv));
    kq_scale_min2(grp, bb, sm);
    kq_scale_min2(grp + 2 * bb, bb, sm + 32);
    KQ_PREP45(0);
    KQ_PREP45(1);
    KQ_PREP45(2);
    KQ_PREP45(3);
    for (int c = 0; c < 8; c++) {
      KQ_LOAD_X(c);
      KQ_SUB32(0);
      KQ_SUB32(1);
      KQ_SUB32(2);
      KQ_SUB32(3);
    }
  }
  out[0] = kq_hsum(acc0);
  out[1] = kq_hsum(acc1);
  out[2] = kq_hsum(acc2);
  out[3] = kq_hsum(acc3);
}

/* Row j's q and scales, and its offset term -32 * sum_s d*sc_s * xs_s into acc_j (xs pre-scaled
   by 32 * 2^-20 to match the 2^20 in dsc). */
#define KQ_PREP6(j)                                                           \
  do {                                                                        \
    kq_expand6(grp + (j) * bb, &dd[2 * (j) + 1], h[j], dsc[j]);               \
    acc##j = _mm256_fnmadd_ps(_mm256_load_ps(dsc[j]), xs_lo, acc##j);         \
    acc##j = _mm256_fnmadd_ps(_mm256_load_ps(dsc[j] + 8), xs_hi, acc##j);     \
  } while (0)

static void kq_dot6(const Wt* w, const uint8_t* grp, const float* x, const float* xs,
                    float out[4]) {
  const int bb = 210, nb = w->K / QK;
  const __m256 dscale = _mm256_set1_ps(KQ_2P20), xscale = _mm256_set1_ps(0x1p-15f);
  _Alignas(32) uint16_t h[4][QK];
  _Alignas(32) float dsc[4][16];
  _Alignas(32) float dd[8];
  __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
  for (int i = 0; i < nb; i++, grp += 4 * bb, x += QK, xs += 16) {
    kq_prefetch(grp, 4 * bb);
    const __m256 xs_lo = _mm256_mul_ps(_mm256_loadu_ps(xs), xscale);
    const __m256 xs_hi = _mm256_mul_ps(_mm256_loadu_ps(xs + 8), xscale);
    /* Each row's d is the upper half of the word ending its block (no read past the block). */
    _mm256_store_ps(dd, _mm256_mul_ps(kq_h2f_rows(grp + 206, bb), dscale));
    KQ_PREP6(0);
    KQ_PREP6(1);
    KQ_PREP6(2);
    KQ_PREP6(3);
    for (int c = 0; c < 8; c++) {
      KQ_LOAD_X(c);
      KQ_SUB2x16(0);
      KQ_SUB2x16(1);
      KQ_SUB2x16(2);
      KQ_SUB2x16(3);
    }
  }
  out[0] = kq_hsum(acc0);
  out[1] = kq_hsum(acc1);
  out[2] = kq_hsum(acc2);
  out[3] = kq_hsum(acc3);
}

static void kq_dot4_q4(const Wt* w, const uint8_t* grp, const float* x, const float* xs,
                       float out[4]) {
  kq_dot45(w, grp, 0, x, xs, out);
}
static void kq_dot4_q5(const Wt* w, const uint8_t* grp, const float* x, const float* xs,
                       float out[4]) {
  kq_dot45(w, grp, 1, x, xs, out);
}

void jcl_kq_dot_group4(const Wt* w, int g, const float* x, const float* xs, float out[4]) {
  const uint8_t* grp = w->data + (size_t)g * 4 * (size_t)w->row_bytes;
  switch (w->type) {
    case GT_Q4_K: kq_dot4_q4(w, grp, x, xs, out); return;
    case GT_Q5_K: kq_dot4_q5(w, grp, x, xs, out); return;
    case GT_Q6_K: kq_dot6(w, grp, x, xs, out); return;
    default: out[0] = out[1] = out[2] = out[3] = 0.f;
  }
}

#else /* plain C */

/* Plain-C decode of one block row, shared by this build's dequant_row and dot.
   q: 256 values (uint8 q, or int8 q-32 for Q6_K); dsc: d*sc per sub-block (8 or 16);
   dm: dmin*m per sub-block of 32 (Q4_K/Q5_K). Returns the sub-block size. */
static int kq_decode(int type, const uint8_t* b, uint8_t q[QK], float dsc[16], float dm[8]) {
  if (type == GT_Q6_K) {
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t* sc = (const int8_t*)(b + 192);
    const float d = kq_h2f(b + 208);
    for (int s = 0; s < 16; s++) dsc[s] = d * (float)sc[s];
    for (int h = 0; h < 2; h++, ql += 64, qh += 32, q += 128) {
      for (int l = 0; l < 32; l++) {
        q[l] = (uint8_t)((int)((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32);
        q[l + 32] = (uint8_t)((int)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
        q[l + 64] = (uint8_t)((int)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
        q[l + 96] = (uint8_t)((int)((ql[l + 32] >> 4) | ((qh[l] >> 6) << 4)) - 32);
      }
    }
    return 16;
  }
  const float d = kq_h2f(b), dmin = kq_h2f(b + 2);
  uint8_t sm[16];
  kq_scale_min(b + 4, sm);
  for (int s = 0; s < 8; s++) {
    dsc[s] = d * (float)sm[s];
    dm[s] = dmin * (float)sm[8 + s];
  }
  const uint8_t* qs = b + (type == GT_Q5_K ? 48 : 16);
  for (int c = 0; c < 4; c++, qs += 32) {
    for (int l = 0; l < 32; l++) {
      q[64 * c + l] = qs[l] & 0xF;
      q[64 * c + 32 + l] = qs[l] >> 4;
    }
  }
  if (type == GT_Q5_K) {
    const uint8_t* qh = b + 16;
    for (int s = 0; s < 8; s++)
      for (int l = 0; l < 32; l++) q[32 * s + l] |= ((qh[l] >> s) & 1) << 4;
  }
  return 32;
}

void jcl_kq_dequant_part(const Wt* w, int r, int i0, int nb, float* out) {
  const int bb = kq_block_bytes(w->type);
  uint8_t q[QK];
  float dsc[16], dm[8];
  if (!bb) {
    memset(out, 0, sizeof(float) * (size_t)nb * QK);
    return;
  }
  for (int i = i0; i < i0 + nb; i++, out += QK) {
    const int sub = kq_decode(w->type, kq_block(w, r, i, bb), q, dsc, dm);
    /* gguf's order: (d*sc) rounded, times q, then minus (dmin*m); never fused. */
    if (sub == 16) {
      for (int l = 0; l < QK; l++) out[l] = dsc[l / 16] * (float)(int8_t)q[l];
    } else {
      for (int l = 0; l < QK; l++) out[l] = dsc[l / 32] * (float)q[l] - dm[l / 32];
    }
  }
}

#if defined(__GNUC__)
#define KQ_NOINLINE __attribute__((noinline))
#else
#define KQ_NOINLINE
#endif

/* sum(q*x) over n (a multiple of 8) in 8 independent lanes, a shape compilers vectorize (kept out
   of line: inlined into the sub-block loop with n known, gcc unrolls it into scalar code). */
static KQ_NOINLINE float kq_dot_f(const float* q, const float* x, int n) {
  float a[8] = {0};
  for (int l = 0; l < n; l += 8)
    for (int k = 0; k < 8; k++) a[k] += q[l + k] * x[l + k];
  return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
}

/* One row of the group, one super-block at a time. The integers go to floats in a loop of their
   own (one the compiler vectorizes; inside the dot it would not). */
static float kq_dot_row(const Wt* w, int g, int j, int bb, const float* x, const float* xs) {
  const int nb = w->K / QK, q6 = w->type == GT_Q6_K;
  uint8_t q[QK];
  float qf[QK], dsc[16], dm[8], acc = 0.f, mins = 0.f;
  for (int i = 0; i < nb; i++, x += QK, xs += 16) {
    kq_decode(w->type, kq_block(w, 4 * g + j, i, bb), q, dsc, dm);
    if (q6) {
      for (int l = 0; l < QK; l++) qf[l] = (float)(int8_t)q[l];
      for (int s = 0; s < 16; s++) acc += dsc[s] * kq_dot_f(qf + 16 * s, x + 16 * s, 16);
    } else {
      for (int l = 0; l < QK; l++) qf[l] = (float)q[l];
      for (int s = 0; s < 8; s++) {
        acc += dsc[s] * kq_dot_f(qf + 32 * s, x + 32 * s, 32);
        mins += dm[s] * (xs[2 * s] + xs[2 * s + 1]);
      }
    }
  }
  return acc - mins;
}

void jcl_kq_dot_group4(const Wt* w, int g, const float* x, const float* xs, float out[4]) {
  const int bb = kq_block_bytes(w->type);
  for (int j = 0; j < 4; j++) out[j] = bb ? kq_dot_row(w, g, j, bb, x, xs) : 0.f;
}

#endif
