/* The K-quants' int8 kernels (see quants.h and q8.c, whose Q4_0 kernel these follow): Q4_K,
   Q5_K and Q6_K weights times int8 activations in blocks of 32, exact integers per block.

   Q4_K/Q5_K (sub-blocks of 32, one per activation block): block s of super-block i adds
     (d*sc_s) * dx_s * P_s  -  (dmin * dx_s) * (m_s * S_s),
   P_s = sum q*xq over the block (q unsigned, 0..15 or 0..31), S_s its sum of xq; both integers.
   Q6_K (sub-blocks of 16, two per activation block c): sub-block s adds
     (d*sc_s) * dx_c * sum (q - 32) * xq,
   one integer: q is used unsigned (0..63) in the byte products and the -32 comes off as 32 times
   s16's sum of xq over the sub-block, exactly, in int32.

   The AVX2 build unpacks a row's super-block (quants and scales) into registers once per tile of
   up to KQ8_TILE tokens. Per token, the byte products (maddubs) of 4 activation blocks are added
   in pairs (hadd) until each 128-bit lane holds a part of each of the 4 blocks (Q4_K/Q5_K: half
   a sub-block; Q6_K: a whole sub-block of 16), so one convert and one FMA with a vector of their
   scales serve 4 blocks: all integers stay exact, only the float rounding differs from one
   product per block. The plain-C build computes the same integers and the same float products,
   summed in another order. */
#include "quants.h"

#define Q4K_BYTES 144
#define Q5K_BYTES 176
#define Q6K_BYTES 210
/* Prefetch distance in bytes (as Q4_0's in q8.c). */
#define KQ8_AHEAD 2048
/* Tokens per tile: the unpacked quants of a row's super-block serve this many. */
#define KQ8_TILE 4

int jcl_kq_q8_supported(int type) { return type == GT_Q4_K || type == GT_Q5_K || type == GT_Q6_K; }

static inline uint16_t kq8_ld16(const uint8_t* p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t kq8_u32(const uint8_t* p) { uint32_t v; memcpy(&v, p, 4); return v; }

#if JCL_AVX2
/* ============================== AVX2 + FMA + F16C ============================== */

#define KQ8_INLINE static inline __attribute__((always_inline))

static inline float kq8_h2f(const uint8_t* p) { return _cvtsh_ss(kq8_ld16(p)); }

/* The cache lines that begin within the bb bytes KQ8_AHEAD on from one row's block b: called
   once per row, so a group's lines are asked for 2 or 3 at a time, each once, as the rows are
   read. (Asked for all at once per group, 9-13 lines, they streamed 15-30% slower: too many
   misses in flight at one time and none for the rest.) Integer addresses: prefetches never
   fault, and running past the weight's end is harmless. */
static inline void kq8_prefetch(const uint8_t* b, int bb) {
  const uintptr_t from = (uintptr_t)b + KQ8_AHEAD, end = from + (uintptr_t)bb;
  for (uintptr_t p = (from + 63) & ~(uintptr_t)63; p < end; p += 64) _mm_prefetch((const char*)p, _MM_HINT_T0);
}

/* out[t*4 + j] = the 8 lanes of acc[j][t] summed, for the tile's NT tokens. */
KQ8_INLINE void kq8_store(__m256 acc[4][KQ8_TILE], float* out, const int NT) {
  for (int t = 0; t < NT; t++) {
    const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(acc[0][t], acc[1][t]), _mm256_hadd_ps(acc[2][t], acc[3][t]));
    _mm_storeu_ps(out + 4 * t, _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
  }
}

/* ---- Q4_K, Q5_K ---- */

/* The 32-bit words at p + j*bb (j = 0..3) as 8 fp16 -> 8 floats (Q4_K/Q5_K: d and dmin of the
   4 rows). */
static inline __m256 kq8_h2f_rows(const uint8_t* p, int bb) {
  return _mm256_cvtph_ps(_mm_setr_epi32((int)kq8_u32(p), (int)kq8_u32(p + bb), (int)kq8_u32(p + 2 * bb),
                                        (int)kq8_u32(p + 3 * bb)));
}

/* Super-block i of the 4 rows: the scales (d*sc_s) * dx_s of each row and token into scl[j][t],
   and the mins terms, all 8 sub-blocks at once, into acc. madd with each m_s in both halves of
   its word pair gives m_s * (s16[2s] + s16[2s+1]) = m_s * S_s exactly. */
KQ8_INLINE void q45k_prep(const uint8_t* grp, int bb, const XQ* x, int i, float scl[4][KQ8_TILE][8],
                          __m256 acc[4][KQ8_TILE], const int NT) {
  _Alignas(32) uint8_t sm[64];
  _Alignas(32) float dd[8];
  _mm256_store_si256((__m256i*)sm, jcl_kq_scale_min2(grp, bb));
  _mm256_store_si256((__m256i*)(sm + 32), jcl_kq_scale_min2(grp + 2 * bb, bb));
  _mm256_store_ps(dd, kq8_h2f_rows(grp, bb));
  for (int j = 0; j < 4; j++) {
    const __m256i sc = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(sm + 16 * j)));
    const __m256i m = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(sm + 16 * j + 8)));
    const __m256i mdup = _mm256_or_si256(m, _mm256_slli_epi32(m, 16));
    const __m256 dsc = _mm256_mul_ps(_mm256_broadcast_ss(&dd[2 * j]), _mm256_cvtepi32_ps(sc));
    for (int t = 0; t < NT; t++) {
      const __m256 dx = _mm256_loadu_ps(x[t].d + 8 * i);
      _mm256_store_ps(scl[j][t], _mm256_mul_ps(dsc, dx));
      const __m256i ms = _mm256_madd_epi16(mdup, _mm256_loadu_si256((const __m256i*)(x[t].s16 + 16 * i)));
      acc[j][t] = _mm256_fnmadd_ps(_mm256_mul_ps(_mm256_broadcast_ss(&dd[2 * j + 1]), dx),
                                   _mm256_cvtepi32_ps(ms), acc[j][t]);
    }
  }
}

/* Q5_K's 5th bit of sub-block s (bit s of each qh byte) moved to bit 4. 16-bit shifts carry
   bits across the byte boundary only into bits the mask drops. */
KQ8_INLINE __m256i q5k_bit(__m256i qh, int s) {
  const __m256i b = s <= 4 ? _mm256_slli_epi16(qh, 4 - s) : _mm256_srli_epi16(qh, s - 4);
  return _mm256_and_si256(b, _mm256_set1_epi8(0x10));
}

/* One row's super-block i against the tile's tokens: its 8 sub-blocks unpacked once into
   registers (w[s]: 32 unsigned q), then per token the pair sums of sub-blocks 4h..4h+3 added
   twice more in pairs (words of at most 8 products: at most 8 * 31 * 128 in magnitude, no
   overflow) and widened, so that each 128-bit lane holds a part of each of the 4 sub-blocks, in
   order, as the 4 scales scl[t] + 4h broadcast to both lanes. */
KQ8_INLINE void q45k_row(const uint8_t* b, int q5, const XQ* x, int i, float scl[KQ8_TILE][8],
                         __m256 acc[KQ8_TILE], const int NT) {
  const __m256i m4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
  kq8_prefetch(b, q5 ? Q5K_BYTES : Q4K_BYTES);
  const __m256i qh = q5 ? _mm256_loadu_si256((const __m256i*)(b + 16)) : _mm256_setzero_si256();
  __m256i w[8];
  for (int c = 0; c < 4; c++) {
    const __m256i v = _mm256_loadu_si256((const __m256i*)(b + (q5 ? 48 : 16) + 32 * c));
    w[2 * c] = _mm256_and_si256(v, m4);
    w[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
    if (q5) {
      w[2 * c] = _mm256_or_si256(w[2 * c], q5k_bit(qh, 2 * c));
      w[2 * c + 1] = _mm256_or_si256(w[2 * c + 1], q5k_bit(qh, 2 * c + 1));
    }
  }
  for (int t = 0; t < NT; t++) {
    const int8_t* xq = x[t].q + 256 * i;
    __m256 a = acc[t];
    for (int h = 0; h < 2; h++) {
      __m256i p[4];
      for (int k = 0; k < 4; k++)
        p[k] = _mm256_maddubs_epi16(w[4 * h + k], _mm256_loadu_si256((const __m256i*)(xq + 128 * h + 32 * k)));
      const __m256i s = _mm256_madd_epi16(
          _mm256_hadd_epi16(_mm256_hadd_epi16(p[0], p[1]), _mm256_hadd_epi16(p[2], p[3])), ones);
      a = _mm256_fmadd_ps(_mm256_broadcast_ps((const __m128*)(scl[t] + 4 * h)), _mm256_cvtepi32_ps(s), a);
    }
    acc[t] = a;
  }
}

/* NT (1..KQ8_TILE) tokens against the 4 rows of a group, super-block by super-block. */
KQ8_INLINE void q45k_tile(const uint8_t* grp, int nb, int q5, const XQ* x, float* out, const int NT) {
  const int bb = q5 ? Q5K_BYTES : Q4K_BYTES;
  _Alignas(32) float scl[4][KQ8_TILE][8];
  __m256 acc[4][KQ8_TILE];
  for (int j = 0; j < 4; j++)
    for (int t = 0; t < NT; t++) acc[j][t] = _mm256_setzero_ps();
  for (int i = 0; i < nb; i++, grp += 4 * bb) {
    q45k_prep(grp, bb, x, i, scl, acc, NT);
    for (int j = 0; j < 4; j++) q45k_row(grp + j * bb, q5, x, i, scl[j], acc[j], NT);
  }
  kq8_store(acc, out, NT);
}

/* Tokens KQ8_TILE at a time, then the rest in one tile: tile(args..., x, out, NT) with NT a
   constant in each call, so each instance keeps its accumulators in registers. */
#define KQ8_TILES(tile, ...)                                                         \
  do {                                                                               \
    int t_ = 0;                                                                      \
    for (; t_ + KQ8_TILE <= n; t_ += KQ8_TILE)                                       \
      tile(__VA_ARGS__, x + t_, out + 4 * t_, KQ8_TILE);                             \
    switch (n - t_) {                                                                \
      case 1: tile(__VA_ARGS__, x + t_, out + 4 * t_, 1); break;                    \
      case 2: tile(__VA_ARGS__, x + t_, out + 4 * t_, 2); break;                    \
      case 3: tile(__VA_ARGS__, x + t_, out + 4 * t_, 3); break;                    \
      default: break;                                                                \
    }                                                                                \
  } while (0)

static void q4k_q8_group4(const uint8_t* grp, int nb, const XQ* x, int n, float* out) {
  KQ8_TILES(q45k_tile, grp, nb, 0);
}
static void q5k_q8_group4(const uint8_t* grp, int nb, const XQ* x, int n, float* out) {
  KQ8_TILES(q45k_tile, grp, nb, 1);
}

/* ---- Q6_K ---- */

/* The sub-blocks of 16 that the two 128-bit lanes of a Q6_K sum end up holding (q6k_row): those
   of half h of a super-block in the order 0, 2, 4, 6 | 1, 3, 5, 7 (plus 8h). */
#define Q6K_LANES _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7)

/* Super-block i: 32 times each token's sums of 16, in the lanes' order, into sx[t][h] (what
   comes off the unsigned products for the -32 of q). */
KQ8_INLINE void q6k_prep(const XQ* x, int i, __m256i sx[KQ8_TILE][2], const int NT) {
  for (int t = 0; t < NT; t++)
    for (int h = 0; h < 2; h++)
      sx[t][h] = _mm256_slli_epi32(_mm256_permutevar8x32_epi32(_mm256_cvtepi16_epi32(_mm_loadu_si128(
                                       (const __m128i*)(x[t].s16 + 16 * i + 8 * h))), Q6K_LANES), 5);
}

/* The 32 6-bit q (0..63) of activation block c of a row: element l of part k = c % 4 of half
   c / 4 is nibble k / 2 of ql[32 (k % 2) + l] and bits 2k, 2k+1 of qh[l]. 16-bit shifts spill
   bits across the byte boundary only into bits the masks drop. */
KQ8_INLINE __m256i q6k_quants(const uint8_t* b, int c) {
  const int h = c >> 2, k = c & 3;
  const __m256i ql = _mm256_loadu_si256((const __m256i*)(b + 64 * h + 32 * (k & 1)));
  const __m256i qh = _mm256_loadu_si256((const __m256i*)(b + 128 + 32 * h));
  const __m256i lo = _mm256_and_si256(k >> 1 ? _mm256_srli_epi16(ql, 4) : ql, _mm256_set1_epi8(0x0F));
  const __m256i hb = k == 0 ? _mm256_slli_epi16(qh, 4) : k == 1 ? _mm256_slli_epi16(qh, 2)
                   : k == 2 ? qh : _mm256_srli_epi16(qh, 2);
  return _mm256_or_si256(lo, _mm256_and_si256(hb, _mm256_set1_epi8(0x30)));
}

/* One row's super-block i (d its super-block scale) against the tile's tokens, its quants unpacked
   once: per activation block, the unsigned products' pair sums widened (madd); then the blocks
   4h..4h+3 added in pairs twice, so that the low 128-bit lane holds the sums of sub-blocks 8h + 0,
   2, 4, 6 and the high one of 8h + 1, 3, 5, 7, less 32 times their sums of xq: the exact integer
   sum (q-32)*xq of each sub-block. One convert and one FMA by (d*sc_s) * dx (dx of blocks 4h..,
   broadcast to both lanes) serve the 8. */
KQ8_INLINE void q6k_row(const uint8_t* b, float d, const XQ* x, int i, __m256i sx[KQ8_TILE][2],
                        __m256 acc[KQ8_TILE], const int NT) {
  const __m256i ones = _mm256_set1_epi16(1);
  kq8_prefetch(b, Q6K_BYTES);
  __m256i q[8];
  __m256 dsc[2];
  for (int h = 0; h < 2; h++)
    dsc[h] = _mm256_mul_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(_mm256_permutevar8x32_epi32(
                               _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)(b + 192 + 8 * h))), Q6K_LANES)));
  for (int c = 0; c < 8; c++) q[c] = q6k_quants(b, c);
  for (int t = 0; t < NT; t++) {
    const int8_t* xq = x[t].q + 256 * i;
    __m256 a = acc[t];
    for (int h = 0; h < 2; h++) {
      __m256i m[4];
      for (int k = 0; k < 4; k++)
        m[k] = _mm256_madd_epi16(
            _mm256_maddubs_epi16(q[4 * h + k], _mm256_loadu_si256((const __m256i*)(xq + 128 * h + 32 * k))), ones);
      const __m256i s = _mm256_sub_epi32(
          _mm256_hadd_epi32(_mm256_hadd_epi32(m[0], m[1]), _mm256_hadd_epi32(m[2], m[3])), sx[t][h]);
      const __m256 scl = _mm256_mul_ps(dsc[h], _mm256_broadcast_ps((const __m128*)(x[t].d + 8 * i + 4 * h)));
      a = _mm256_fmadd_ps(scl, _mm256_cvtepi32_ps(s), a);
    }
    acc[t] = a;
  }
}

KQ8_INLINE void q6k_tile(const uint8_t* grp, int nb, const XQ* x, float* out, const int NT) {
  _Alignas(32) float d[8];
  __m256i sx[KQ8_TILE][2];
  __m256 acc[4][KQ8_TILE];
  for (int j = 0; j < 4; j++)
    for (int t = 0; t < NT; t++) acc[j][t] = _mm256_setzero_ps();
  for (int i = 0; i < nb; i++, grp += 4 * Q6K_BYTES) {
    q6k_prep(x, i, sx, NT);
    /* each row's d is the upper half of the word ending its block */
    _mm256_store_ps(d, kq8_h2f_rows(grp + 206, Q6K_BYTES));
    for (int j = 0; j < 4; j++) q6k_row(grp + j * Q6K_BYTES, d[2 * j + 1], x, i, sx, acc[j], NT);
  }
  kq8_store(acc, out, NT);
}

static void q6k_q8_group4(const uint8_t* grp, int nb, const XQ* x, int n, float* out) {
  KQ8_TILES(q6k_tile, grp, nb);
}

#else
/* ============================== plain C ============================== */

static inline float kq8_h2f(const uint8_t* p) {  /* exact for every input (see kquants.c) */
  const uint16_t h = kq8_ld16(p);
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
  uint32_t bits;
  if (e == 0x1F) {
    bits = sign | 0x7F800000u | (m << 13);
  } else if (e) {
    bits = sign | ((e + 112u) << 23) | (m << 13);
  } else {
    const float f = (float)m * 0x1p-24f;
    memcpy(&bits, &f, 4);
    bits |= sign;
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

/* The 8 scales then 8 mins of a Q4_K/Q5_K block, 6 bits each, as 4 words of bytes (kquants.c's
   kq_scale_min). */
static inline void kq8_scale_min(const uint8_t* s12, uint32_t v[4]) {
  const uint32_t u0 = kq8_u32(s12), u1 = kq8_u32(s12 + 4), u2 = kq8_u32(s12 + 8);
  v[0] = u0 & 0x3F3F3F3Fu;
  v[1] = (u2 & 0x0F0F0F0Fu) | ((u0 >> 2) & 0x30303030u);
  v[2] = u1 & 0x3F3F3F3Fu;
  v[3] = ((u2 >> 4) & 0x0F0F0F0Fu) | ((u1 >> 2) & 0x30303030u);
}

/* One block row decoded: q unsigned (Q4_K 0..15, Q5_K 0..31, Q6_K 0..63, in element order),
   dsc[s] = d*sc_s per sub-block (8 of 32 or 16 of 16), and for Q4_K/Q5_K the 6-bit mins m and
   dmin. */
typedef struct {
  uint8_t q[256];
  float dsc[16], dmin;
  int m[8];
} KqRow;

static void kq8_decode45(const uint8_t* b, int q5, KqRow* r) {
  uint32_t v[4];
  uint8_t sm[16];
  kq8_scale_min(b + 4, v);
  memcpy(sm, v, 16);
  const float d = kq8_h2f(b);
  r->dmin = kq8_h2f(b + 2);
  for (int s = 0; s < 8; s++) {
    r->dsc[s] = d * (float)sm[s];
    r->m[s] = sm[8 + s];
  }
  const uint8_t *qs = b + (q5 ? 48 : 16), *qh = b + 16;
  for (int c = 0; c < 4; c++)
    for (int l = 0; l < 32; l++) {
      r->q[64 * c + l] = qs[32 * c + l] & 15;
      r->q[64 * c + 32 + l] = qs[32 * c + l] >> 4;
    }
  if (q5)
    for (int s = 0; s < 8; s++)
      for (int l = 0; l < 32; l++) r->q[32 * s + l] |= ((qh[l] >> s) & 1) << 4;
}

/* Element 32c + l (c = 4h + k) is nibble k / 2 of ql[64h + 32 (k % 2) + l] and bits 2k, 2k+1 of
   qh[32h + l] (q6k_quants of the AVX2 build). */
static void kq8_decode6(const uint8_t* b, KqRow* r) {
  const int8_t* sc = (const int8_t*)(b + 192);
  const float d = kq8_h2f(b + 208);
  for (int s = 0; s < 16; s++) r->dsc[s] = d * (float)sc[s];
  for (int c = 0; c < 8; c++) {
    const int h = c >> 2, k = c & 3;
    const uint8_t *ql = b + 64 * h + 32 * (k & 1), *qh = b + 128 + 32 * h;
    for (int l = 0; l < 32; l++)
      r->q[32 * c + l] = (uint8_t)(((ql[l] >> (4 * (k >> 1))) & 15) | (((qh[l] >> (2 * k)) & 3) << 4));
  }
}

/* sum q*xq over len elements, in a loop compilers vectorize (kept out of line: inlined with len
   known, gcc unrolls the 16-element one into scalar code). */
static __attribute__((noinline)) int kq8_dot(const uint8_t* q, const int8_t* xq, int len) {
  int s = 0;
  for (int l = 0; l < len; l++) s += q[l] * xq[l];
  return s;
}

/* A decoded super-block i against one token: the same integers and products as the AVX2 build. */
static float kq8_block(const KqRow* r, int q6, const XQ* x, int i) {
  const int8_t* xq = x->q + 256 * i;
  const int16_t* s16 = x->s16 + 16 * i;
  const float* dx = x->d + 8 * i;
  float acc = 0.f;
  if (q6) {
    for (int s = 0; s < 16; s++)
      acc += (r->dsc[s] * dx[s >> 1]) * (float)(kq8_dot(r->q + 16 * s, xq + 16 * s, 16) - 32 * s16[s]);
    return acc;
  }
  for (int s = 0; s < 8; s++) {
    acc += (r->dsc[s] * dx[s]) * (float)kq8_dot(r->q + 32 * s, xq + 32 * s, 32);
    acc -= (r->dmin * dx[s]) * (float)(r->m[s] * (s16[2 * s] + s16[2 * s + 1]));
  }
  return acc;
}

/* Each row of the group decoded one super-block at a time, once for all n tokens. */
static void kq8_group4(const uint8_t* grp, int type, int bb, int nb, const XQ* x, int n, float* out) {
  KqRow r;
  for (int k = 0; k < 4 * n; k++) out[k] = 0.f;
  for (int j = 0; j < 4; j++)
    for (int i = 0; i < nb; i++) {
      const uint8_t* b = grp + ((size_t)i * 4 + j) * bb;
      if (type == GT_Q6_K) kq8_decode6(b, &r);
      else kq8_decode45(b, type == GT_Q5_K, &r);
      for (int t = 0; t < n; t++) out[4 * t + j] += kq8_block(&r, type == GT_Q6_K, x + t, i);
    }
}

static void q4k_q8_group4(const uint8_t* grp, int nb, const XQ* x, int n, float* out) {
  kq8_group4(grp, GT_Q4_K, Q4K_BYTES, nb, x, n, out);
}
static void q5k_q8_group4(const uint8_t* grp, int nb, const XQ* x, int n, float* out) {
  kq8_group4(grp, GT_Q5_K, Q5K_BYTES, nb, x, n, out);
}
static void q6k_q8_group4(const uint8_t* grp, int nb, const XQ* x, int n, float* out) {
  kq8_group4(grp, GT_Q6_K, Q6K_BYTES, nb, x, n, out);
}

#endif

/* ============================== both builds ============================== */

void jcl_kq_q8_group4(const Wt* w, int g, const XQ* x, int n, float* out) {
  const uint8_t* grp = w->data + (size_t)g * 4 * (size_t)w->row_bytes;
  const int nb = w->K / 256;
  switch (w->type) {
    case GT_Q4_K: q4k_q8_group4(grp, nb, x, n, out); return;
    case GT_Q5_K: q5k_q8_group4(grp, nb, x, n, out); return;
    case GT_Q6_K: q6k_q8_group4(grp, nb, x, n, out); return;
    default:
      for (int k = 0; k < 4 * n; k++) out[k] = 0.f;
  }
}
