/* Weight formats the CPU kernel reads: GGUF's own blocks, unchanged, with the rows of a weight
   matrix interleaved in groups of 4.

   Layout of a quantized weight (Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K):
     rows padded with zero blocks to a multiple of 4 and grouped by 4; group g starts at
     data + g * 4 * row_bytes; within a group, block i of row j (0..3) is at byte offset
     (i * 4 + j) * block_bytes. So one group is one sequential stream (the prefetcher follows one
     stream, not four), and the 4 rows of a group share the activation loads.
   F32 and F16 weights are plain rows: row r at data + r * row_bytes (no padding).

   Weights are dequantized exactly as gguf/llama.cpp do. Activations are fp32, or, when the model
   rounds them (act_q8, the default), rounded to int8 in blocks of 32 before each product with a
   quantized weight (below); either way results match a float reference doing the same closely.

   Two builds of every function: AVX2+FMA+F16C where the compiler targets them, plain C
   otherwise (the `generic` build); the same results up to summation order. */
#ifndef JCL_QUANTS_H
#define JCL_QUANTS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <math.h>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define JCL_AVX2 1
#include <immintrin.h>
#else
#define JCL_AVX2 0
#endif

/* fp16 <-> fp32 (every build, every file); fp32 -> fp16 rounds to nearest even, as F16C, numpy
   and torch do. */
#if JCL_AVX2
static inline float jcl_h2f(uint16_t h) { return _cvtsh_ss(h); }
static inline uint16_t jcl_f2h(float f) { return (uint16_t)_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT); }

/* The 8 scales then 8 mins (6 bits each, packed in 12 bytes at offset 4 as gguf's
   get_scale_min unpacks them) of the Q4_K/Q5_K blocks at b and b + bb, one block per 128-bit
   lane (kquants.c and kquants_q8.c). */
static inline __m256i jcl_kq_scale_min2(const uint8_t* b, int bb) {
  const __m256i v = _mm256_loadu2_m128i((const __m128i*)(b + bb + 4), (const __m128i*)(b + 4));
  const __m256i a = _mm256_shuffle_epi32(v, _MM_SHUFFLE(2, 1, 2, 0)); /* u0 u2 u1 u2 */
  const __m256i c = _mm256_shuffle_epi32(v, _MM_SHUFFLE(1, 1, 0, 0)); /* u0 u0 u1 u1 */
  const __m256i lo6 = _mm256_setr_epi32(0x3F3F3F3F, 0x0F0F0F0F, 0x3F3F3F3F, 0x0F0F0F0F,
                                        0x3F3F3F3F, 0x0F0F0F0F, 0x3F3F3F3F, 0x0F0F0F0F);
  const __m256i hi2 = _mm256_setr_epi32(0, 0x30303030, 0, 0x30303030, 0, 0x30303030, 0, 0x30303030);
  const __m256i sh = _mm256_setr_epi32(0, 0, 0, 4, 0, 0, 0, 4);
  return _mm256_or_si256(_mm256_and_si256(_mm256_srlv_epi32(a, sh), lo6),
                         _mm256_and_si256(_mm256_srli_epi32(c, 2), hi2));
}
#else
/* fp16 -> fp32, exact for every input: normals rebias the exponent, inf/NaN keep their
   payload (NaNs stay signaling or quiet as they were, like numpy), subnormals and zero are
   m * 2^-24, an exact float product. */
static inline float jcl_h2f(uint16_t h) {
  const uint32_t em = h & 0x7FFFu, sign = (uint32_t)(h & 0x8000u) << 16;
  const float sub = (float)(int32_t)em * 5.9604644775390625e-8f;
  uint32_t sub_bits;
  memcpy(&sub_bits, &sub, 4);
  const uint32_t bits = em >= 0x7C00u ? (em << 13) | 0x7F800000u
                      : em >= 0x0400u ? (em << 13) + ((uint32_t)(127 - 15) << 23) : sub_bits;
  const uint32_t out_bits = bits | sign;
  float f;
  memcpy(&f, &out_bits, 4);
  return f;
}

/* fp32 -> fp16, round to nearest even (F. Giesen's float_to_half_fast3_rtne): NaN becomes the
   quiet NaN 0x7E00 (F16C keeps some payload bits; both are NaN), at least 65520 in magnitude
   infinity; below 2^-14 the float add of 0.5 rounds the subnormal's bits in place. */
static inline uint16_t jcl_f2h(float f) {
  const uint32_t magic = (uint32_t)((127 - 15) + (23 - 10) + 1) << 23;
  uint32_t u;
  memcpy(&u, &f, 4);
  const uint32_t sign = (u >> 16) & 0x8000u;
  u &= 0x7FFFFFFFu;
  if (u >= (uint32_t)(127 + 16) << 23) return (uint16_t)(sign | (u > 0x7F800000u ? 0x7E00u : 0x7C00u));
  if (u < (uint32_t)113 << 23) {
    float a, b;
    memcpy(&a, &u, 4);
    memcpy(&b, &magic, 4);
    a += b;
    memcpy(&u, &a, 4);
    return (uint16_t)(sign | (u - magic));
  }
  u += ((uint32_t)(15 - 127) << 23) + 0xFFFu + ((u >> 13) & 1u);
  return (uint16_t)(sign | (u >> 13));
}
#endif

/* GGML type numbers, as in the GGUF file. */
enum { GT_F32 = 0, GT_F16 = 1, GT_Q4_0 = 2, GT_Q4_1 = 3, GT_Q8_0 = 8,
       GT_Q4_K = 12, GT_Q5_K = 13, GT_Q6_K = 14 };

typedef struct {
  const uint8_t* data;   /* the layout above */
  int32_t type;          /* GT_* */
  int32_t N, K;          /* rows, columns (K a multiple of the block size) */
  int32_t pad;
  int64_t row_bytes;     /* bytes of one row in its own format (K / block_elems * block_bytes) */
} Wt;

/* Elements and bytes of one block of `type` (F32/F16: one element). 0 for unknown types. */
int jcl_block_elems(int type);
int jcl_block_bytes(int type);

/* Floats of auxiliary activation data x_aux() writes for a K-wide vector (enough for any type). */
#define JCL_AUX_FLOATS(K) ((K) / 16 + 8)

/* What dot_group4 needs besides x, computed once per activation vector and shared by every
   weight that multiplies it: the sums of x over each run of 16 elements (xs[i] = sum of
   x[16i .. 16i+15]), from which block sums of 32 are pair sums. */
void jcl_x_aux(const float* x, int K, float* xs);

/* out[j] = (row 4g+j of w) . x for j = 0..3. Rows past N give whatever (the caller drops them);
   F32/F16 rows past N must not be read. */
void jcl_dot_group4(const Wt* w, int g, const float* x, const float* xs, float out[4]);

/* Row r of w, dequantized exactly as gguf's dequantize() does (fp32). */
void jcl_dequant_row(const Wt* w, int r, float* out);
/* Columns k0..k0+kn-1 of row r, likewise: k0 a multiple of the block size, kn too unless the
   part ends the row. */
void jcl_dequant_part(const Wt* w, int r, int k0, int kn, float* out);

/* The K-quants (Q4_K, Q5_K, Q6_K: super-blocks of 256), in kquants.c; same contracts as above. */
void jcl_kq_dot_group4(const Wt* w, int g, const float* x, const float* xs, float out[4]);
void jcl_kq_dequant_row(const Wt* w, int r, float* out);
/* Super-blocks i0..i0+nb-1 of row r. */
void jcl_kq_dequant_part(const Wt* w, int r, int i0, int nb, float* out);

/* ---- int8 activations (q8.c, kquants_q8.c) ----
   The activation vector that multiplies a quantized weight is rounded to int8 in blocks of 32,
   as llama.cpp's Q8_0 does but with an fp32 scale: d = max|x| / 127 over the block and
   q = nearbyint(x / d) (all 0 where d is 0). The rounded vector x~ = q * d is what every path
   multiplies: the int8 kernels with exact integer sums per block, and the fp32 kernels (types
   without an int8 kernel, the BLAS prompt path) on x~ itself, so all paths agree up to the order
   of float sums. F32 and F16 weights always take x unrounded. */
typedef struct {
  const int8_t* q;      /* [K] */
  const float* d;       /* [K / 32] block scales */
  const int16_t* s16;   /* [K / 16] sums of q over each run of 16 */
} XQ;

/* Round x (K a multiple of 32) into q, d, s16; x~ into xt too unless it is NULL (xt may be x). */
void jcl_x_q8(const float* x, int K, int8_t* q, float* d, int16_t* s16, float* xt);

/* Whether `type` has an int8 kernel (otherwise its fp32 kernel runs on x~). */
int jcl_q8_supported(int type);

/* out[t*4 + j] = (row 4g+j of w) . x~_t for the n activation vectors x[0..n-1] (any n); rows past
   N give whatever (the caller drops them). */
void jcl_q8_group4(const Wt* w, int g, const XQ* x, int n, float* out);

/* The K-quants' int8 kernels (kquants_q8.c: Q4_K, Q5_K, Q6_K); same contracts as above. */
int jcl_kq_q8_supported(int type);
void jcl_kq_q8_group4(const Wt* w, int g, const XQ* x, int n, float* out);

#endif
