/* int8 activations (see quants.h): the rounding of an activation vector, and the int8 kernels of
   Q4_0 (the K-quants' are in kquants_q8.c; Q4_1 and Q8_0 run their fp32 kernels on x~).

   Why: with fp32 activations a 4-bit weight costs a conversion to float and a float multiply per
   element, which keeps a decode step compute-bound on one or two cores and makes a short prompt
   chunk (a few typed tokens) cost several decode steps. With int8 activations one instruction
   multiplies 32 weights by 32 activations and adds them in pairs (maddubs), the weights are
   unpacked once per block for all the tokens of a chunk, and only the per-block sum is converted
   to float.

   Q4_0 with int8 x: block sum = d_w * d_x * (sum q*xq - 8 * sum xq), all integer inside the
   parentheses (the 4-bit q are used unsigned, 0..15, and the offset comes off the block sum of
   xq), so the AVX2 and plain-C builds differ only in the order of the float sums across blocks. */
#include <stdlib.h>

#include "quants.h"

#define Q40_BYTES 18
#define PF_AHEAD 2048

int jcl_q8_supported(int type) { return type == GT_Q4_0 || jcl_kq_q8_supported(type); }

static inline uint16_t q8_ld16(const uint8_t* p) { uint16_t v; memcpy(&v, p, 2); return v; }

#if JCL_AVX2
/* ============================== AVX2 + FMA + F16C ============================== */

static inline float q8_hmax8(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
}

static inline int q8_hsum_i32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  return _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1)));
}

/* One block of 32: q, its two sums of 16 and x~ (the same operations as the plain-C build:
   a correctly rounded division, round half to even). */
static void q8_block(const float* x, int8_t* q, float* d, int16_t* s16, float* xt) {
  __m256 v[4];
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  __m256 m = _mm256_setzero_ps();
  for (int k = 0; k < 4; k++) {
    v[k] = _mm256_loadu_ps(x + 8 * k);
    m = _mm256_max_ps(m, _mm256_and_ps(v[k], abs_mask));
  }
  const float db = q8_hmax8(m) / 127.f;
  *d = db;
  __m256i qi[4];
  const __m256 dv = _mm256_set1_ps(db);
  for (int k = 0; k < 4; k++)
    qi[k] = db == 0.f ? _mm256_setzero_si256()
                      : _mm256_cvtps_epi32(_mm256_round_ps(_mm256_div_ps(v[k], dv),
                                                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  s16[0] = (int16_t)q8_hsum_i32(_mm256_add_epi32(qi[0], qi[1]));
  s16[1] = (int16_t)q8_hsum_i32(_mm256_add_epi32(qi[2], qi[3]));
  /* packs interleave the 128-bit lanes; the permute puts the 32 bytes back in element order */
  const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(qi[0], qi[1]), _mm256_packs_epi32(qi[2], qi[3]));
  _mm256_storeu_si256((__m256i*)q, _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
  if (xt)
    for (int k = 0; k < 4; k++) _mm256_storeu_ps(xt + 8 * k, _mm256_mul_ps(_mm256_cvtepi32_ps(qi[k]), dv));
}

/* The 32 nibbles of a Q4_0 block as unsigned bytes in element order (low nibbles are elements
   0..15, high 16..31). */
static inline __m256i q40_nibbles(const uint8_t* p) {
  const __m128i t = _mm_loadu_si128((const __m128i*)p);
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t, 4), t), _mm256_set1_epi8(0x0F));
}

/* The fp16 scales of the 4 rows of one block index, as 4 floats. */
static inline __m128 q40_scales4(const uint8_t* b) {
  return _mm_cvtph_ps(_mm_setr_epi16((short)q8_ld16(b), (short)q8_ld16(b + Q40_BYTES),
                                     (short)q8_ld16(b + 2 * Q40_BYTES), (short)q8_ld16(b + 3 * Q40_BYTES),
                                     0, 0, 0, 0));
}

/* NT (1 or 2) tokens against the 4 rows of a group: 8 lanes of float sums per (token, row), each
   block's exact integer sum converted and scaled once. */
static inline __attribute__((always_inline)) void q40_tile(const uint8_t* b, int nb, const XQ* x,
                                                           float* out, const int NT) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[2][4];
  for (int t = 0; t < NT; t++)
    for (int j = 0; j < 4; j++) acc[t][j] = _mm256_setzero_ps();
  for (int i = 0; i < nb; i++, b += 4 * Q40_BYTES) {
    _mm_prefetch((const char*)b + PF_AHEAD, _MM_HINT_T0);
    const __m128 dw = q40_scales4(b);
    __m256i wq[4];
    for (int j = 0; j < 4; j++) wq[j] = q40_nibbles(b + j * Q40_BYTES + 2);
    for (int t = 0; t < NT; t++) {
      const __m256i xv = _mm256_loadu_si256((const __m256i*)(x[t].q + 32 * i));
      /* the -8 offset, as 8 * (block sum of xq) off lane 0 of each row's integer sums */
      const __m256i off = _mm256_setr_epi32(8 * (x[t].s16[2 * i] + x[t].s16[2 * i + 1]), 0, 0, 0, 0, 0, 0, 0);
      float sc[4];
      _mm_storeu_ps(sc, _mm_mul_ps(dw, _mm_set1_ps(x[t].d[i])));
      for (int j = 0; j < 4; j++) {
        const __m256i s = _mm256_sub_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(wq[j], xv), ones), off);
        acc[t][j] = _mm256_fmadd_ps(_mm256_broadcast_ss(sc + j), _mm256_cvtepi32_ps(s), acc[t][j]);
      }
    }
  }
  for (int t = 0; t < NT; t++) {
    __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(acc[t][0], acc[t][1]), _mm256_hadd_ps(acc[t][2], acc[t][3]));
    _mm_storeu_ps(out + 4 * t, _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
  }
}

/* Tokens two at a time: the 4 rows' unpacked blocks and 8 accumulators stay in registers. */
static void q40_q8_group4(const uint8_t* b, int nb, const XQ* x, int n, float* out) {
  int t = 0;
  for (; t + 2 <= n; t += 2) q40_tile(b, nb, x + t, out + 4 * t, 2);
  if (t < n) q40_tile(b, nb, x + t, out + 4 * t, 1);
}

#else
/* ============================== plain C ============================== */

static void q8_block(const float* x, int8_t* q, float* d, int16_t* s16, float* xt) {
  float m = 0.f;
  for (int k = 0; k < 32; k++) m = fabsf(x[k]) > m ? fabsf(x[k]) : m;
  const float db = m / 127.f;
  *d = db;
  int s[2] = {0, 0};
  for (int k = 0; k < 32; k++) {
    const int v = db == 0.f ? 0 : (int)nearbyintf(x[k] / db);
    q[k] = (int8_t)v;
    s[k / 16] += v;
    if (xt) xt[k] = (float)v * db;
  }
  s16[0] = (int16_t)s[0];
  s16[1] = (int16_t)s[1];
}

/* One row's integer block sum (q - 8 folded in through the block sum of xq). */
static inline int q40_block_dot(const uint8_t* qs, const int8_t* xq, int S) {
  int s = 0;
  for (int l = 0; l < 16; l++) s += (qs[l] & 15) * xq[l] + (qs[l] >> 4) * xq[l + 16];
  return s - 8 * S;
}

static void q40_q8_group4(const uint8_t* b0, int nb, const XQ* x, int n, float* out) {
  for (int t = 0; t < n; t++)
    for (int j = 0; j < 4; j++) {
      const uint8_t* b = b0 + j * Q40_BYTES;
      float acc = 0.f;
      for (int i = 0; i < nb; i++, b += 4 * Q40_BYTES) {
        const int S = x[t].s16[2 * i] + x[t].s16[2 * i + 1];
        acc += jcl_h2f(q8_ld16(b)) * x[t].d[i] * (float)q40_block_dot(b + 2, x[t].q + 32 * i, S);
      }
      out[4 * t + j] = acc;
    }
}

#endif

/* ============================== both builds ============================== */

void jcl_x_q8(const float* x, int K, int8_t* q, float* d, int16_t* s16, float* xt) {
  for (int b = 0; b < K / 32; b++)
    q8_block(x + 32 * b, q + 32 * b, d + b, s16 + 2 * b, xt ? xt + 32 * b : NULL);
}

void jcl_q8_group4(const Wt* w, int g, const XQ* x, int n, float* out) {
  if (w->type == GT_Q4_0) {
    q40_q8_group4(w->data + (size_t)g * 4 * (size_t)w->row_bytes, w->K / 32, x, n, out);
    return;
  }
  jcl_kq_q8_group4(w, g, x, n, out);
}

/* x~ of each of n rows of K in place (the BLAS prompt path rounds its activations this way). */
void jcl_round_rows(float* x, int n, int K) {
  int8_t q[32];
  float d;
  int16_t s16[2];
  for (int j = 0; j < n; j++)
    for (int b = 0; b < K / 32; b++) q8_block(x + (size_t)j * K + 32 * b, q, &d, s16, x + (size_t)j * K + 32 * b);
}

/* y[t*N + r] = (row r of w) . x~_t for n vectors x [n, K] (tests and microbenchmarks). Returns -1
   when the type has no int8 kernel or memory runs out. */
int jcl_test_q8_rows(const Wt* w, const float* x, int n, float* y) {
  const int K = w->K;
  if (!jcl_q8_supported(w->type)) return -1;
  int8_t* q = malloc((size_t)n * K);
  float* d = malloc(sizeof(float) * (size_t)n * (K / 32));
  int16_t* s16 = malloc(sizeof(int16_t) * (size_t)n * (K / 16));
  XQ* xq = malloc(sizeof(XQ) * (size_t)n);
  float* o = malloc(sizeof(float) * 4 * (size_t)n);
  int rc = -1;
  if (q && d && s16 && xq && o) {
    for (int t = 0; t < n; t++) {
      jcl_x_q8(x + (size_t)t * K, K, q + (size_t)t * K, d + (size_t)t * (K / 32), s16 + (size_t)t * (K / 16), NULL);
      xq[t] = (XQ){q + (size_t)t * K, d + (size_t)t * (K / 32), s16 + (size_t)t * (K / 16)};
    }
    for (int g = 0; g < (w->N + 3) / 4; g++) {
      jcl_q8_group4(w, g, xq, n, o);
      for (int t = 0; t < n; t++)
        for (int j = 0; j < 4 && 4 * g + j < w->N; j++) y[(size_t)t * w->N + 4 * g + j] = o[4 * t + j];
    }
    rc = 0;
  }
  free(q); free(d); free(s16); free(xq); free(o);
  return rc;
}
