/* F32, F16, Q4_0, Q4_1 and Q8_0 weights in the layout of quants.h: block sizes, the activation
   sums, the 4-row dot product and row dequantization (the K-quants are dispatched to kquants.c).

   Each hot function exists twice, chosen at compile time by JCL_AVX2: an AVX2+FMA+F16C version
   and a plain-C one (any x86-64 or ARM compiler). Both dequantize exactly as gguf does and
   multiply in fp32, so they agree up to the order of the float sums.

   The quantized dot products follow the same plan in both: the 4 rows of a group share each
   block's activation loads, and the constant part of a block's weights (Q4_0's -8*d, Q4_1's m)
   is applied once per block through the block sum of x (xs), not per element.

   Alignment: quantized blocks need none (blocks of 18 or 34 bytes leave every field unaligned,
   so every load is unaligned); F32 and F16 rows are read as their own types, so their start must
   be 4- resp. 2-byte aligned, as x and the output are. */
#include <stdlib.h>

#include "quants.h"

/* Bytes from the start of one block of 4 rows to the next (the 4 rows' blocks of one index). */
#define Q40_BYTES 18
#define Q41_BYTES 20
#define Q80_BYTES 34

int jcl_block_elems(int type) {
  switch (type) {
    case GT_F32: case GT_F16: return 1;
    case GT_Q4_0: case GT_Q4_1: case GT_Q8_0: return 32;
    case GT_Q4_K: case GT_Q5_K: case GT_Q6_K: return 256;
    default: return 0;
  }
}

int jcl_block_bytes(int type) {
  switch (type) {
    case GT_F32: return 4;
    case GT_F16: return 2;
    case GT_Q4_0: return Q40_BYTES;
    case GT_Q4_1: return Q41_BYTES;
    case GT_Q8_0: return Q80_BYTES;
    case GT_Q4_K: return 144;
    case GT_Q5_K: return 176;
    case GT_Q6_K: return 210;
    default: return 0;
  }
}

int jcl_wt_size(void) { return (int)sizeof(Wt); }

static inline uint16_t ld16(const uint8_t* p) { uint16_t v; memcpy(&v, p, 2); return v; }

/* The rows of group g of a quantized weight (block i of row j at (i*4 + j) * block bytes). */
static inline const uint8_t* group_base(const Wt* w, int g) {
  return w->data + (size_t)g * 4 * (size_t)w->row_bytes;
}

/* Row r of a plain (F32/F16) weight for slot j of group g: rows past N repeat row N-1 (read,
   never past the end), and their outputs are zeroed by the caller. */
static inline const uint8_t* plain_row(const Wt* w, int g, int j) {
  int r = 4 * g + j < w->N ? 4 * g + j : w->N - 1;
  return w->data + (size_t)r * (size_t)w->row_bytes;
}

static inline void zero_past_n(const Wt* w, int g, float out[4]) {
  for (int j = 0; j < 4; j++) if (4 * g + j >= w->N) out[j] = 0.f;
}

/* Software prefetch of the quantized weights, PF_AHEAD bytes ahead of the block being read. The
   hardware prefetcher stops at every 4 KiB page, and with this much arithmetic between the
   loads, out-of-order execution alone keeps too few lines in flight. N requests per step, 64
   bytes apart: one for the 72 and 80-byte steps of Q4_0 and Q4_1 (the one line in nine it skips
   costs less than a duplicate request on every step), three for the 136 bytes of Q8_0. Plain
   rows (F32, F16) read 4 dense streams, which the hardware prefetcher follows well enough. */
#define PF_AHEAD 2048

#if JCL_AVX2
/* ============================== AVX2 + FMA + F16C ============================== */

#define PREFETCH_STEP(P, N) {                                                                      \
    for (int k_ = 0; k_ < (N); k_++)                                                               \
      _mm_prefetch((const char*)(P) + PF_AHEAD + 64 * k_, _MM_HINT_T0); }

static inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

/* The 4 horizontal sums of a0..a3 into out[0..3]. */
static inline void hsum4x8(__m256 a0, __m256 a1, __m256 a2, __m256 a3, float out[4]) {
  __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
  _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
}

void jcl_x_aux(const float* x, int K, float* xs) {
  int i = 0;
  for (; 16 * (i + 1) <= K; i++)
    xs[i] = hsum8(_mm256_add_ps(_mm256_loadu_ps(x + 16 * i), _mm256_loadu_ps(x + 16 * i + 8)));
  if (16 * i < K) {  /* a partial last run (F32/F16 widths only): its sum, for completeness */
    float s = 0.f;
    for (int k = 16 * i; k < K; k++) s += x[k];
    xs[i] = s;
  }
}

/* The fp16 scales of one block index, the 4 rows' together: a few wide loads, blends and a
   permute gather them for one conversion (cheaper than four scalar loads and conversions). */

/* Q4_0: d of rows 0..3 in lanes 0, 3, 4, 7 (bytes 0, 18, 36, 54; the other lanes are junk). */
static inline __m256 q40_scales(const uint8_t* b) {
  const __m256i lo = _mm256_loadu_si256((const __m256i*)b);
  const __m256i hi = _mm256_loadu_si256((const __m256i*)(b + 32));
  const __m256i w = _mm256_blend_epi16(lo, hi, 0x0C);
  const __m256i p = _mm256_permutevar8x32_epi32(w, _mm256_setr_epi32(0, 4, 1, 5, 0, 0, 0, 0));
  return _mm256_cvtph_ps(_mm256_castsi256_si128(p));
}

/* Q4_1: d0 m0 d1 m1 d2 m2 d3 m3 (the dwords at bytes 0, 20, 40, 60). */
static inline __m256 q41_scales(const uint8_t* b) {
  const __m256i lo = _mm256_loadu_si256((const __m256i*)b);
  const __m256i hi = _mm256_loadu_si256((const __m256i*)(b + 32));
  const __m256i w = _mm256_blend_epi32(lo, hi, 0x84);
  const __m256i p = _mm256_permutevar8x32_epi32(w, _mm256_setr_epi32(0, 5, 2, 7, 0, 0, 0, 0));
  return _mm256_cvtph_ps(_mm256_castsi256_si128(p));
}

/* Q8_0: d of rows 0..3 in lanes 0..3 (bytes 0, 34, 68, 102). */
static inline __m128 q80_scales(const uint8_t* b) {
  const __m128i a = _mm_blend_epi16(_mm_loadu_si128((const __m128i*)b),
                                    _mm_loadu_si128((const __m128i*)(b + 32)), 0x02);
  const __m128i c = _mm_blend_epi16(_mm_loadu_si128((const __m128i*)(b + 64)),
                                    _mm_loadu_si128((const __m128i*)(b + 96)), 0x08);
  return _mm_cvtph_ps(_mm_blend_epi16(a, c, 0x0C));
}

/* The per-row scale broadcasts come from a stack copy: loads, where a register permute would
   take a shuffle slot that the widening of the quants needs. */
#define SCALES(V) float sc[8]; _mm256_storeu_ps(sc, V);
#define BCAST(J) _mm256_broadcast_ss(sc + (J))

/* Byte k of a row's 16 holds element k (low nibble) and k+16 (high): with t the whole byte,
   lo*x + hi*y = lo*(x - y/16) + t*(y/16), exactly in real numbers and with roundings of the same
   size as the direct form (y/16 is exact), so only the low nibble needs masking. x0, x1 are
   x - y/16 and x2, x3 are y/16 of the block's two 8-lane halves, shared by the 4 rows. */
#define LOADX4(X)                                                                                  \
  const __m256 x2 = _mm256_mul_ps(_mm256_loadu_ps((X) + 16), s16);                                 \
  const __m256 x3 = _mm256_mul_ps(_mm256_loadu_ps((X) + 24), s16);                                 \
  const __m256 x0 = _mm256_sub_ps(_mm256_loadu_ps(X), x2);                                         \
  const __m256 x1 = _mm256_sub_ps(_mm256_loadu_ps((X) + 8), x3);

/* The block sum of x (two runs of 16) in every lane. */
#define BLOCK_SUM(I)                                                                               \
  _mm256_add_ps(_mm256_broadcast_ss(xs + 2 * (I)), _mm256_broadcast_ss(xs + 2 * (I) + 1))

/* One row's 16 bytes of nibbles at QP times x0..x3 (FIRST starts the sum from the low nibbles
   of the first 8 bytes), scaled by the broadcast block scale D into ACC. Bytes are widened
   straight from memory. */
#define Q4_ROW(QP, FIRST, D, ACC) {                                                                \
    const __m256i t0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(QP)));               \
    const __m256i t1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)((QP) + 8)));         \
    __m256 p = FIRST(_mm256_cvtepi32_ps(_mm256_and_si256(t0, lo4)), x0);                           \
    p = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(t1, lo4)), x1, p);                    \
    p = _mm256_fmadd_ps(_mm256_cvtepi32_ps(t0), x2, p);                                           \
    p = _mm256_fmadd_ps(_mm256_cvtepi32_ps(t1), x3, p);                                           \
    ACC = _mm256_fmadd_ps(D, p, ACC); }

#define Q4_CONSTS                                                                                  \
  const __m256i lo4 = _mm256_set1_epi32(0x0F);                                                   \
  const __m256 s16 = _mm256_set1_ps(1.f / 16.f);                                                  \
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();                                      \
  __m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();

/* Q4_0: w = d*(q-8). Each row's block sum starts at -S in each of its 8 lanes (S = block sum of
   x), which is the -8*S of the offset at no extra instruction. */
#define Q40_FIRST(V, X) _mm256_fmsub_ps(V, X, S)
static void q40_group4(const uint8_t* b, int nb, const float* x, const float* xs, float out[4]) {
  Q4_CONSTS
  for (int i = 0; i < nb; i++, b += 4 * Q40_BYTES, x += 32) {
    PREFETCH_STEP(b, 1)
    LOADX4(x)
    const __m256 S = BLOCK_SUM(i), d = q40_scales(b);
    SCALES(d)
    Q4_ROW(b + 2, Q40_FIRST, BCAST(0), a0)
    Q4_ROW(b + Q40_BYTES + 2, Q40_FIRST, BCAST(3), a1)
    Q4_ROW(b + 2 * Q40_BYTES + 2, Q40_FIRST, BCAST(4), a2)
    Q4_ROW(b + 3 * Q40_BYTES + 2, Q40_FIRST, BCAST(7), a3)
  }
  hsum4x8(a0, a1, a2, a3, out);
}

/* Q4_1: w = d*q + m. The m part goes through the block sums, the 4 rows in one multiply-add
   (its d lanes unused). */
static void q41_group4(const uint8_t* b, int nb, const float* x, const float* xs, float out[4]) {
  Q4_CONSTS
  __m256 moff = _mm256_setzero_ps();
  for (int i = 0; i < nb; i++, b += 4 * Q41_BYTES, x += 32) {
    PREFETCH_STEP(b, 1)
    LOADX4(x)
    const __m256 dm = q41_scales(b);
    moff = _mm256_fmadd_ps(dm, BLOCK_SUM(i), moff);
    SCALES(dm)
    Q4_ROW(b + 4, _mm256_mul_ps, BCAST(0), a0)
    Q4_ROW(b + Q41_BYTES + 4, _mm256_mul_ps, BCAST(2), a1)
    Q4_ROW(b + 2 * Q41_BYTES + 4, _mm256_mul_ps, BCAST(4), a2)
    Q4_ROW(b + 3 * Q41_BYTES + 4, _mm256_mul_ps, BCAST(6), a3)
  }
  hsum4x8(a0, a1, a2, a3, out);
  float m[8];
  _mm256_storeu_ps(m, moff);
  for (int j = 0; j < 4; j++) out[j] += m[2 * j + 1];
}

#define Q8_CVT(P) _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)(P))))
#define Q8_ROW(QP, D, ACC) {                                                                       \
    __m256 p = _mm256_mul_ps(Q8_CVT(QP), x0);                                                      \
    p = _mm256_fmadd_ps(Q8_CVT((QP) + 8), x1, p);                                                  \
    p = _mm256_fmadd_ps(Q8_CVT((QP) + 16), x2, p);                                                 \
    p = _mm256_fmadd_ps(Q8_CVT((QP) + 24), x3, p);                                                 \
    ACC = _mm256_fmadd_ps(D, p, ACC); }

static void q80_group4(const uint8_t* b, int nb, const float* x, float out[4]) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  __m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  for (int i = 0; i < nb; i++, b += 4 * Q80_BYTES, x += 32) {
    PREFETCH_STEP(b, 3)
    const __m256 x0 = _mm256_loadu_ps(x), x1 = _mm256_loadu_ps(x + 8);
    const __m256 x2 = _mm256_loadu_ps(x + 16), x3 = _mm256_loadu_ps(x + 24);
    const __m256 d = _mm256_castps128_ps256(q80_scales(b));
    SCALES(d)
    Q8_ROW(b + 2, BCAST(0), a0)
    Q8_ROW(b + Q80_BYTES + 2, BCAST(1), a1)
    Q8_ROW(b + 2 * Q80_BYTES + 2, BCAST(2), a2)
    Q8_ROW(b + 3 * Q80_BYTES + 2, BCAST(3), a3)
  }
  hsum4x8(a0, a1, a2, a3, out);
}

/* Plain rows: 16 columns a step with two accumulators per row (the fma latency), then 8, then
   the scalar tail. LOAD8(row, k) gives 8 fp32 weights of a row. */
#define PLAIN_GROUP4(T, LOAD8, SCALAR) {                                                          \
    const T* r0 = (const T*)plain_row(w, g, 0); const T* r1 = (const T*)plain_row(w, g, 1);       \
    const T* r2 = (const T*)plain_row(w, g, 2); const T* r3 = (const T*)plain_row(w, g, 3);       \
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0; \
    int k = 0;                                                                                     \
    for (; k + 16 <= K; k += 16) {                                                                 \
      const __m256 xa = _mm256_loadu_ps(x + k), xb = _mm256_loadu_ps(x + k + 8);                  \
      a0 = _mm256_fmadd_ps(LOAD8(r0, k), xa, a0); b0 = _mm256_fmadd_ps(LOAD8(r0, k + 8), xb, b0); \
      a1 = _mm256_fmadd_ps(LOAD8(r1, k), xa, a1); b1 = _mm256_fmadd_ps(LOAD8(r1, k + 8), xb, b1); \
      a2 = _mm256_fmadd_ps(LOAD8(r2, k), xa, a2); b2 = _mm256_fmadd_ps(LOAD8(r2, k + 8), xb, b2); \
      a3 = _mm256_fmadd_ps(LOAD8(r3, k), xa, a3); b3 = _mm256_fmadd_ps(LOAD8(r3, k + 8), xb, b3); \
    }                                                                                              \
    for (; k + 8 <= K; k += 8) {                                                                   \
      const __m256 xa = _mm256_loadu_ps(x + k);                                                    \
      a0 = _mm256_fmadd_ps(LOAD8(r0, k), xa, a0); a1 = _mm256_fmadd_ps(LOAD8(r1, k), xa, a1);     \
      a2 = _mm256_fmadd_ps(LOAD8(r2, k), xa, a2); a3 = _mm256_fmadd_ps(LOAD8(r3, k), xa, a3);     \
    }                                                                                              \
    hsum4x8(_mm256_add_ps(a0, b0), _mm256_add_ps(a1, b1), _mm256_add_ps(a2, b2),                  \
            _mm256_add_ps(a3, b3), out);                                                           \
    for (; k < K; k++) {                                                                           \
      out[0] += SCALAR(r0[k]) * x[k]; out[1] += SCALAR(r1[k]) * x[k];                             \
      out[2] += SCALAR(r2[k]) * x[k]; out[3] += SCALAR(r3[k]) * x[k];                             \
    }                                                                                              \
  }
#define F32_LOAD8(R, K) _mm256_loadu_ps((R) + (K))
#define F16_LOAD8(R, K) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)((R) + (K))))
#define F32_SCALAR(V) (V)

static void f32_group4(const Wt* w, int g, const float* x, float out[4]) {
  const int K = w->K;
  PLAIN_GROUP4(float, F32_LOAD8, F32_SCALAR)
}

static void f16_group4(const Wt* w, int g, const float* x, float out[4]) {
  const int K = w->K;
  PLAIN_GROUP4(uint16_t, F16_LOAD8, jcl_h2f)
}

/* ---- dequantization: the same operations as gguf (no fused multiply-add) ---- */

static void q40_row(const uint8_t* b, int nb, float* out) {
  const __m256i lo4 = _mm256_set1_epi32(0x0F), eight = _mm256_set1_epi32(8);
  for (int i = 0; i < nb; i++, b += 4 * Q40_BYTES, out += 32) {
    const __m256 d = _mm256_set1_ps(jcl_h2f(ld16(b)));
    const __m256i t0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(b + 2)));
    const __m256i t1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(b + 10)));
#define Q40_OUT(T) _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_sub_epi32(T, eight)))
    _mm256_storeu_ps(out, Q40_OUT(_mm256_and_si256(t0, lo4)));
    _mm256_storeu_ps(out + 8, Q40_OUT(_mm256_and_si256(t1, lo4)));
    _mm256_storeu_ps(out + 16, Q40_OUT(_mm256_srli_epi32(t0, 4)));
    _mm256_storeu_ps(out + 24, Q40_OUT(_mm256_srli_epi32(t1, 4)));
#undef Q40_OUT
  }
}

static void q41_row(const uint8_t* b, int nb, float* out) {
  const __m256i lo4 = _mm256_set1_epi32(0x0F);
  for (int i = 0; i < nb; i++, b += 4 * Q41_BYTES, out += 32) {
    const __m256 d = _mm256_set1_ps(jcl_h2f(ld16(b))), m = _mm256_set1_ps(jcl_h2f(ld16(b + 2)));
    const __m256i t0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(b + 4)));
    const __m256i t1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(b + 12)));
#define Q41_OUT(T) _mm256_add_ps(_mm256_mul_ps(d, _mm256_cvtepi32_ps(T)), m)
    _mm256_storeu_ps(out, Q41_OUT(_mm256_and_si256(t0, lo4)));
    _mm256_storeu_ps(out + 8, Q41_OUT(_mm256_and_si256(t1, lo4)));
    _mm256_storeu_ps(out + 16, Q41_OUT(_mm256_srli_epi32(t0, 4)));
    _mm256_storeu_ps(out + 24, Q41_OUT(_mm256_srli_epi32(t1, 4)));
#undef Q41_OUT
  }
}

static void q80_row(const uint8_t* b, int nb, float* out) {
  for (int i = 0; i < nb; i++, b += 4 * Q80_BYTES, out += 32) {
    const __m256 d = _mm256_set1_ps(jcl_h2f(ld16(b)));
    for (int k = 0; k < 32; k += 8) _mm256_storeu_ps(out + k, _mm256_mul_ps(Q8_CVT(b + 2 + k), d));
  }
}

static void f16_row(const uint16_t* h, int K, float* out) {
  int k = 0;
  for (; k + 8 <= K; k += 8)
    _mm256_storeu_ps(out + k, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(h + k))));
  for (; k < K; k++) out[k] = jcl_h2f(h[k]);
}

#else
/* ============================== plain C ============================== */

#if defined(__GNUC__)  /* GCC and Clang, any target */
#define PREFETCH_STEP(P, N) {                                                                      \
    for (int k_ = 0; k_ < (N); k_++) __builtin_prefetch((const char*)(P) + PF_AHEAD + 64 * k_); }
#else
#define PREFETCH_STEP(P, N)
#endif

/* 64 of them, the same conversion written as whole-array steps so that it vectorizes. */
#define H2F_CHUNK 64
static void h2f_chunk(const void* src, float* restrict v) {
  uint16_t h[H2F_CHUNK];
  uint32_t sub_bits[H2F_CHUNK], o[H2F_CHUNK];
  float sub[H2F_CHUNK];
  memcpy(h, src, sizeof h);
  for (int l = 0; l < H2F_CHUNK; l++)
    sub[l] = (float)(int32_t)(h[l] & 0x3FFu) * 5.9604644775390625e-8f;
  memcpy(sub_bits, sub, sizeof sub);
  for (int l = 0; l < H2F_CHUNK; l++) {
    const uint32_t em = h[l] & 0x7FFFu;
    const uint32_t bits = em >= 0x7C00u ? (em << 13) | 0x7F800000u
                        : em >= 0x0400u ? (em << 13) + ((uint32_t)(127 - 15) << 23) : sub_bits[l];
    o[l] = bits | (uint32_t)(h[l] & 0x8000u) << 16;
  }
  memcpy(v, o, sizeof o);
}

void jcl_x_aux(const float* x, int K, float* xs) {
  int i = 0;
  for (; 16 * (i + 1) <= K; i++) {
    float l[8];
    for (int k = 0; k < 8; k++) l[k] = x[16 * i + k] + x[16 * i + 8 + k];
    xs[i] = ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
  }
  if (16 * i < K) {
    float s = 0.f;
    for (int k = 16 * i; k < K; k++) s += x[k];
    xs[i] = s;
  }
}

static inline float sum8(const float* l) {
  return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
}

/* A block's 32 quants as floats, in element order, then its 8 lanes of products with x (lane l
   sums elements l, l+8, l+16, l+24). Converting first, into arrays, is what lets compilers
   vectorize both steps. */
static inline void nib_floats(const uint8_t* restrict q, float* restrict v) {
  /* nibbles split 8 bytes at a time in 64-bit words, then widened in one convertible loop */
  uint64_t w[2], t[4];
  uint8_t u[32];
  memcpy(w, q, 16);
  for (int h = 0; h < 2; h++) {
    t[h] = w[h] & 0x0F0F0F0F0F0F0F0Full;
    t[h + 2] = (w[h] >> 4) & 0x0F0F0F0F0F0F0F0Full;
  }
  memcpy(u, t, 32);
  for (int l = 0; l < 32; l++) v[l] = (float)u[l];
}

static inline void i8_floats(const int8_t* restrict q, float* restrict v) {
  for (int l = 0; l < 32; l++) v[l] = (float)q[l];
}

static inline void block_lanes(const float* restrict v, const float* restrict x, float* restrict p) {
  for (int l = 0; l < 8; l++)
    p[l] = (v[l] * x[l] + v[l + 8] * x[l + 8]) + (v[l + 16] * x[l + 16] + v[l + 24] * x[l + 24]);
}

static inline void add_scaled(float* restrict acc, float d, const float* restrict p) {
  for (int l = 0; l < 8; l++) acc[l] += d * p[l];
}

/* Q4_0: w = d*(q-8): d*(sum q x) per block, and the -8*d*S of each block through S = sum of x. */
static void q40_group4(const uint8_t* b, int nb, const float* x, const float* xs, float out[4]) {
  float acc[4][8] = {{0}}, off[4] = {0};
  for (int i = 0; i < nb; i++, b += 4 * Q40_BYTES, x += 32) {
    PREFETCH_STEP(b, 1)
    const float S = xs[2 * i] + xs[2 * i + 1];
    for (int j = 0; j < 4; j++) {
      const uint8_t* r = b + j * Q40_BYTES;
      const float d = jcl_h2f(ld16(r));
      float v[32], p[8];
      nib_floats(r + 2, v);
      block_lanes(v, x, p);
      add_scaled(acc[j], d, p);
      off[j] += d * S;
    }
  }
  for (int j = 0; j < 4; j++) out[j] = sum8(acc[j]) - 8.f * off[j];
}

static void q41_group4(const uint8_t* b, int nb, const float* x, const float* xs, float out[4]) {
  float acc[4][8] = {{0}}, off[4] = {0};
  for (int i = 0; i < nb; i++, b += 4 * Q41_BYTES, x += 32) {
    PREFETCH_STEP(b, 1)
    const float S = xs[2 * i] + xs[2 * i + 1];
    for (int j = 0; j < 4; j++) {
      const uint8_t* r = b + j * Q41_BYTES;
      float v[32], p[8];
      nib_floats(r + 4, v);
      block_lanes(v, x, p);
      add_scaled(acc[j], jcl_h2f(ld16(r)), p);
      off[j] += jcl_h2f(ld16(r + 2)) * S;
    }
  }
  for (int j = 0; j < 4; j++) out[j] = sum8(acc[j]) + off[j];
}

static void q80_group4(const uint8_t* b, int nb, const float* x, float out[4]) {
  float acc[4][8] = {{0}};
  for (int i = 0; i < nb; i++, b += 4 * Q80_BYTES, x += 32) {
    PREFETCH_STEP(b, 3)
    for (int j = 0; j < 4; j++) {
      const uint8_t* r = b + j * Q80_BYTES;
      float v[32], p[8];
      i8_floats((const int8_t*)(r + 2), v);
      block_lanes(v, x, p);
      add_scaled(acc[j], jcl_h2f(ld16(r)), p);
    }
  }
  for (int j = 0; j < 4; j++) out[j] = sum8(acc[j]);
}

/* Plain rows: 8 lanes per row, the 4 rows sharing each x chunk. */
static void f32_group4(const Wt* w, int g, const float* x, float out[4]) {
  const int K = w->K;
  const float* r[4];
  for (int j = 0; j < 4; j++) r[j] = (const float*)plain_row(w, g, j);
  float acc[4][8] = {{0}};
  int k = 0;
  for (; k + 8 <= K; k += 8)
    for (int j = 0; j < 4; j++)
      for (int l = 0; l < 8; l++) acc[j][l] += r[j][k + l] * x[k + l];
  for (int j = 0; j < 4; j++) {
    float s = sum8(acc[j]);
    for (int t = k; t < K; t++) s += r[j][t] * x[t];
    out[j] = s;
  }
}

static void f16_group4(const Wt* w, int g, const float* x, float out[4]) {
  const int K = w->K;
  /* each row is widened a chunk at a time, so the conversion and the products both vectorize */
  const uint16_t* r[4];
  for (int j = 0; j < 4; j++) r[j] = (const uint16_t*)plain_row(w, g, j);
  float acc[4][8] = {{0}};
  int k = 0;
  for (; k + H2F_CHUNK <= K; k += H2F_CHUNK)
    for (int j = 0; j < 4; j++) {
      float v[H2F_CHUNK];
      h2f_chunk(r[j] + k, v);
      for (int c = 0; c < H2F_CHUNK; c += 8)
        for (int l = 0; l < 8; l++) acc[j][l] += v[c + l] * x[k + c + l];
    }
  for (int j = 0; j < 4; j++) {
    float s = sum8(acc[j]);
    for (int t = k; t < K; t++) s += jcl_h2f(ld16((const uint8_t*)(r[j] + t))) * x[t];
    out[j] = s;
  }
}

static void q40_row(const uint8_t* b, int nb, float* out) {
  for (int i = 0; i < nb; i++, b += 4 * Q40_BYTES, out += 32) {
    const float d = jcl_h2f(ld16(b));
    for (int l = 0; l < 16; l++) {
      out[l] = d * (float)((b[2 + l] & 15) - 8);
      out[l + 16] = d * (float)((b[2 + l] >> 4) - 8);
    }
  }
}

static void q41_row(const uint8_t* b, int nb, float* out) {
  for (int i = 0; i < nb; i++, b += 4 * Q41_BYTES, out += 32) {
    const float d = jcl_h2f(ld16(b)), m = jcl_h2f(ld16(b + 2));
    for (int l = 0; l < 16; l++) {
      out[l] = d * (float)(b[4 + l] & 15) + m;
      out[l + 16] = d * (float)(b[4 + l] >> 4) + m;
    }
  }
}

static void q80_row(const uint8_t* b, int nb, float* out) {
  for (int i = 0; i < nb; i++, b += 4 * Q80_BYTES, out += 32) {
    const float d = jcl_h2f(ld16(b));
    for (int l = 0; l < 32; l++) out[l] = (float)(int8_t)b[2 + l] * d;
  }
}

static void f16_row(const uint16_t* h, int K, float* out) {
  int k = 0;
  for (; k + H2F_CHUNK <= K; k += H2F_CHUNK) h2f_chunk(h + k, out + k);
  for (; k < K; k++) out[k] = jcl_h2f(ld16((const uint8_t*)(h + k)));
}

#endif

/* ============================== dispatch (both builds) ============================== */

void jcl_dot_group4(const Wt* w, int g, const float* x, const float* xs, float out[4]) {
  const int nb = w->K / 32;
  switch (w->type) {
    case GT_Q4_0: q40_group4(group_base(w, g), nb, x, xs, out); return;
    case GT_Q4_1: q41_group4(group_base(w, g), nb, x, xs, out); return;
    case GT_Q8_0: q80_group4(group_base(w, g), nb, x, out); return;
    case GT_F32: f32_group4(w, g, x, out); zero_past_n(w, g, out); return;
    case GT_F16: f16_group4(w, g, x, out); zero_past_n(w, g, out); return;
    case GT_Q4_K: case GT_Q5_K: case GT_Q6_K: jcl_kq_dot_group4(w, g, x, xs, out); return;
    default: out[0] = out[1] = out[2] = out[3] = 0.f;
  }
}

void jcl_dequant_part(const Wt* w, int r, int k0, int kn, float* out) {
  const int be = jcl_block_elems(w->type), nb = kn / (be ? be : 1);
  /* a quantized row starts at its block k0/be in its group and strides over the 4 rows' blocks */
  const uint8_t* q = group_base(w, r / 4) +
                     ((size_t)(k0 / (be ? be : 1)) * 4 + (size_t)(r % 4)) * (size_t)jcl_block_bytes(w->type);
  const uint8_t* plain = w->data + (size_t)r * (size_t)w->row_bytes;
  switch (w->type) {
    case GT_Q4_0: q40_row(q, nb, out); return;
    case GT_Q4_1: q41_row(q, nb, out); return;
    case GT_Q8_0: q80_row(q, nb, out); return;
    case GT_F32: memcpy(out, (const float*)plain + k0, sizeof(float) * (size_t)kn); return;
    case GT_F16: f16_row((const uint16_t*)plain + k0, kn, out); return;
    case GT_Q4_K: case GT_Q5_K: case GT_Q6_K: jcl_kq_dequant_part(w, r, k0 / 256, kn / 256, out); return;
    default: memset(out, 0, sizeof(float) * (size_t)kn);
  }
}

void jcl_dequant_row(const Wt* w, int r, float* out) { jcl_dequant_part(w, r, 0, w->K, out); }

/* y = w x for all N rows, on the calling thread (tests and microbenchmarks). */
void jcl_test_dot_rows(const Wt* w, const float* x, float* y) {
  float* xs = malloc(sizeof(float) * (size_t)JCL_AUX_FLOATS(w->K));
  if (!xs) return;
  jcl_x_aux(x, w->K, xs);
  for (int g = 0; g < (w->N + 3) / 4; g++) {
    float o[4];
    jcl_dot_group4(w, g, x, xs, o);
    for (int j = 0; j < 4 && 4 * g + j < w->N; j++) y[4 * g + j] = o[j];
  }
  free(xs);
}
