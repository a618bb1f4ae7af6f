/* The forward pass of a Llama model on the CPU, on weights in the layout of quants.h.

   jcl_forward runs n consecutive tokens at positions pos0..pos0+n-1, writes their keys and
   values into the KV buffers and returns the last token's logits:
     n == 1  one decode step: every weight row is dotted with the activation in its own format,
             4 rows at a time;
     n  > 1  a prompt chunk: each group of 4 weight rows is read once for all n activation
             vectors.
   With act_q8 (quants.h) each activation vector is first rounded to int8 blocks, and the
   weight types with an int8 kernel (jcl_q8_group4) multiply those; the others run their fp32
   kernels (jcl_dot_group4, or a dequantized segment times the chunk) on the rounded floats.
   Work is shared between threads in small dynamic chunks, so a thread that loses its core to
   another process delays only the chunk it holds, not a fixed share of every matrix. */
#include "quants.h"
#include <omp.h>
#include <stdlib.h>

typedef struct {
  const float* attn_norm;
  const float* ffn_norm;
  Wt q, k, v, o, gate, up, down;
} Layer;

typedef struct {
  int32_t n_layers, dim, hidden, n_heads, n_kv, head_dim, vocab, n_threads;
  float eps, attn_scale;
  int32_t rope_pairs;   /* 1: rotate adjacent pairs (GGUF's q/k row order), 0: halves (HF's) */
  int32_t max_pos;
  int32_t act_q8;       /* 1: round activations to int8 before quantized weights (quants.h) */
  int32_t pad;
  Wt embed, lm_head;
  const float* out_norm;
  const float* cos_t;   /* [max_pos, head_dim / 2] */
  const float* sin_t;
  Layer* layers;
} Model;

typedef struct {
  void* k;              /* [n_layers, n_kv, cap, head_dim], fp32 or fp16 (half) */
  void* v;
  int32_t cap;
  int32_t half;         /* 1: keys and values stored as fp16, as llama.cpp's default cache */
} KV;

int jcl_abi_version(void) { return 3; }
int jcl_model_size(void) { return (int)sizeof(Model); }
int jcl_layer_size(void) { return (int)sizeof(Layer); }
int jcl_kv_size(void) { return (int)sizeof(KV); }
int jcl_has_avx2(void) { return JCL_AVX2; }

/* Groups of 4 rows a thread takes at a time in a decode step: small enough that a thread that
   loses its core holds up little, large enough that the prefetches running ahead of a chunk's
   end (into rows the other thread may take) are few. */
#define DYN_CHUNK 16

/* ---- small vector steps ------------------------------------------------------------------ */

static void rmsnorm(float* out, const float* x, const float* w, int n, float eps) {
  float ss = 0.f;
  for (int i = 0; i < n; i++) ss += x[i] * x[i];
  const float r = 1.0f / sqrtf(ss / (float)n + eps);
  for (int i = 0; i < n; i++) out[i] = w[i] * (x[i] * r);
}

static void rope(float* v, const float* c, const float* s, int hd, int pairs) {
  const int half = hd / 2;
  for (int i = 0; i < half; i++) {
    const int a_i = pairs ? 2 * i : i, b_i = pairs ? 2 * i + 1 : i + half;
    const float a = v[a_i], b = v[b_i];
    v[a_i] = a * c[i] - b * s[i];
    v[b_i] = b * c[i] + a * s[i];
  }
}

static float silu(float g) { return g / (1.0f + expf(-g)); }

static void add_into(float* x, const float* y, int n) {
  for (int i = 0; i < n; i++) x[i] += y[i];
}

/* One thread's view of an activation vector x, for every weight that multiplies it: the sums
   xs, and with act_q8 its int8 blocks and the rounded floats x~ (the fp32 kernels of quantized
   types without an int8 kernel read x~). Each thread keeps its own copy, so no barrier. */
typedef struct {
  const float* x;
  float *xt, *xs, *d;
  int8_t* q;
  int16_t* s16;
  int q8;
} Act;

/* Floats of one thread's Act storage for vectors up to `widest` (a multiple of 32). */
#define ACT_W(w) (((w) + 31) / 32 * 32)
#define ACT_FLOATS(widest) ((size_t)ACT_W(widest) * 45 / 32 + JCL_AUX_FLOATS(ACT_W(widest)))

/* Thread `t`'s Act in the storage `mem` (ACT_FLOATS(widest) floats per thread). */
static Act act_at(float* mem, int t, int widest, int q8) {
  Act a;
  float* base = mem + (size_t)t * ACT_FLOATS(widest);
  widest = ACT_W(widest);
  a.x = NULL;
  a.q8 = q8;
  a.xt = base;
  a.xs = a.xt + widest;
  a.d = a.xs + JCL_AUX_FLOATS(widest);
  a.q = (int8_t*)(a.d + widest / 32);             /* widest bytes: widest / 4 floats */
  a.s16 = (int16_t*)(a.d + widest / 32 + widest / 4);  /* widest / 16 int16: widest / 32 floats */
  return a;
}

static void act_set(Act* a, const float* x, int K) {
  a->x = x;
  if (a->q8) jcl_x_q8(x, K, a->q, a->d, a->s16, a->xt);
  jcl_x_aux(a->q8 ? a->xt : x, K, a->xs);
}

static inline int is_quant(int type) { return type != GT_F32 && type != GT_F16; }

static inline void act_dot_group4(const Wt* w, int g, const Act* a, float out[4]) {
  if (a->q8 && jcl_q8_supported(w->type)) {
    const XQ xq = {a->q, a->d, a->s16};
    jcl_q8_group4(w, g, &xq, 1, out);
  } else {
    jcl_dot_group4(w, g, a->q8 && is_quant(w->type) ? a->xt : a->x, a->xs, out);
  }
}

/* y = w x for all rows (an orphaned `omp for`, call inside the parallel region; no barrier). */
static void matvec_nowait(const Wt* w, const Act* a, float* y) {
  const int N = w->N, groups = (N + 3) / 4;
#pragma omp for schedule(dynamic, DYN_CHUNK) nowait
  for (int g = 0; g < groups; g++) {
    float o[4];
    act_dot_group4(w, g, a, o);
    for (int j = 0; j < 4 && 4 * g + j < N; j++) y[4 * g + j] = o[j];
  }
}

/* ---- attention --------------------------------------------------------------------------- */

#if JCL_AVX2
static inline float hsum8(__m256 v) {
  __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  __m128 sh = _mm_movehdup_ps(lo);
  __m128 s = _mm_add_ps(lo, sh);
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehl_ps(sh, s)));
}
#endif

/* Keys and values: rows of hd fp32, or of hd fp16 (half; half the memory and half the reads of
   a long context's attention). HALF is a constant in each instance of the loops below. */
#define KV_ALWAYS static inline __attribute__((always_inline))
KV_ALWAYS float kv_at(const void* row, int c, const int HALF) {
  return HALF ? jcl_h2f(((const uint16_t*)row)[c]) : ((const float*)row)[c];
}
#if JCL_AVX2
KV_ALWAYS __m256 kv_load8(const void* row, int c, const int HALF) {
  return HALF ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)((const uint16_t*)row + c)))
              : _mm256_loadu_ps((const float*)row + c);
}
#endif

/* out[t] = (q . K_t) * scale for `count` rows of K. */
KV_ALWAYS void scores_t(const float* q, const void* K, int count, float scale, float* out, int hd, const int HALF) {
  for (int t = 0; t < count; t++) {
    const void* k = (const char*)K + (size_t)t * hd * (HALF ? 2 : 4);
#if JCL_AVX2
    __m256 a = _mm256_setzero_ps(), b = _mm256_setzero_ps();
    int c = 0;
    for (; c + 16 <= hd; c += 16) {
      a = _mm256_fmadd_ps(_mm256_loadu_ps(q + c), kv_load8(k, c, HALF), a);
      b = _mm256_fmadd_ps(_mm256_loadu_ps(q + c + 8), kv_load8(k, c + 8, HALF), b);
    }
    float s = hsum8(_mm256_add_ps(a, b));
#else
    float s = 0.f;
    int c = 0;
#endif
    for (; c < hd; c++) s += q[c] * kv_at(k, c, HALF);
    out[t] = s * scale;
  }
}

static void scores(const float* q, const void* K, int count, float scale, float* out, int hd, int half) {
  if (half) scores_t(q, K, count, scale, out, hd, 1);
  else scores_t(q, K, count, scale, out, hd, 0);
}

/* o += sum_t p[t] * V_t for `count` rows of V. */
KV_ALWAYS void mix_t(const float* p, const void* V, int count, float* o, int hd, const int HALF) {
  for (int t = 0; t < count; t++) {
    const void* v = (const char*)V + (size_t)t * hd * (HALF ? 2 : 4);
    int c = 0;
#if JCL_AVX2
    const __m256 pt = _mm256_set1_ps(p[t]);
    for (; c + 8 <= hd; c += 8)
      _mm256_storeu_ps(o + c, _mm256_fmadd_ps(pt, kv_load8(v, c, HALF), _mm256_loadu_ps(o + c)));
#endif
    for (; c < hd; c++) o[c] += p[t] * kv_at(v, c, HALF);
  }
}

static void mix(const float* p, const void* V, int count, float* o, int hd, int half) {
  if (half) mix_t(p, V, count, o, hd, 1);
  else mix_t(p, V, count, o, hd, 0);
}

/* Row `row` of a KV buffer (read by attention, written by kv_store), and a row stored there
   (fp16: rounded to nearest even). */
static inline void* kv_row(const void* base, int half, size_t row, int hd) {
  return (char*)(uintptr_t)base + row * (size_t)hd * (half ? 2 : 4);
}

static void kv_store(void* dst, int half, const float* x, int hd) {
  if (!half) {
    memcpy(dst, x, sizeof(float) * hd);
    return;
  }
  uint16_t* o = (uint16_t*)dst;
  int c = 0;
#if JCL_AVX2
  for (; c + 8 <= hd; c += 8)
    _mm_storeu_si128((__m128i*)(o + c), _mm256_cvtps_ph(_mm256_loadu_ps(x + c), _MM_FROUND_TO_NEAREST_INT));
#endif
  for (; c < hd; c++) o[c] = jcl_f2h(x[c]);
}

/* fp32 -> fp16 as the KV cache stores it, for the tests. */
void jcl_f2h_rows(const float* x, uint16_t* y, int n) { kv_store(y, 1, x, n); }

#if JCL_AVX2
/* e^x for 8 floats (x <= 0 here): Cephes' range reduction and polynomial, within 2 ulp of expf
   and several times cheaper than one expf call per score. */
static inline __m256 exp8(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  x = _mm256_sub_ps(x, _mm256_mul_ps(fx, _mm256_set1_ps(0.693359375f)));
  x = _mm256_sub_ps(x, _mm256_mul_ps(fx, _mm256_set1_ps(-2.12194440e-4f)));
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_add_ps(_mm256_mul_ps(y, x), _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_add_ps(_mm256_mul_ps(y, x), _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_add_ps(_mm256_mul_ps(y, x), _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_add_ps(_mm256_mul_ps(y, x), _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_add_ps(_mm256_mul_ps(y, x), _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(y, x), x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}
#endif

void jcl_exp(const float* x, float* y, int n) {  /* the softmax's exp, for the tests */
  int i = 0;
#if JCL_AVX2
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, exp8(_mm256_loadu_ps(x + i)));
#endif
  for (; i < n; i++) y[i] = expf(x[i]);
}

static void softmax(float* a, int T) {
  float mx = a[0], sum = 0.f;
  for (int t = 1; t < T; t++) if (a[t] > mx) mx = a[t];
  int t = 0;
#if JCL_AVX2
  const __m256 m8 = _mm256_set1_ps(mx);
  __m256 s8 = _mm256_setzero_ps();
  for (; t + 8 <= T; t += 8) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(a + t), m8));
    _mm256_storeu_ps(a + t, e);
    s8 = _mm256_add_ps(s8, e);
  }
  sum = hsum8(s8);
#endif
  for (; t < T; t++) { a[t] = expf(a[t] - mx); sum += a[t]; }
  const float inv = 1.0f / sum;
  for (t = 0; t < T; t++) a[t] *= inv;
}

/* Causal attention of query heads h0..h1-1 (all of one KV head's group or a slice of it) for n
   tokens at positions pos0.. ; K, V: that KV head's rows. Keys and values are walked in blocks of
   64 positions for all the queries at once, so each block is read from memory once. */
static void attend(const float* Q, float* O, int ld, int h0, int h1, int n, int pos0,
                   const void* K, const void* V, int half, int hd, float scale, float* att) {
  const int Tmax = pos0 + n, TB = 64, nq = (h1 - h0) * n;
  for (int t0 = 0; t0 < Tmax; t0 += TB)
    for (int i = 0; i < nq; i++) {
      const int h = h0 + i / n, j = i % n, T = pos0 + j + 1, t1 = t0 + TB < T ? t0 + TB : T;
      if (t0 < t1) scores(Q + (size_t)j * ld + (size_t)h * hd, kv_row(K, half, t0, hd), t1 - t0,
                          scale, att + (size_t)i * Tmax + t0, hd, half);
    }
  for (int i = 0; i < nq; i++) {
    const int h = h0 + i / n, j = i % n;
    softmax(att + (size_t)i * Tmax, pos0 + j + 1);
    memset(O + (size_t)j * ld + (size_t)h * hd, 0, sizeof(float) * hd);
  }
  for (int t0 = 0; t0 < Tmax; t0 += TB)
    for (int i = 0; i < nq; i++) {
      const int h = h0 + i / n, j = i % n, T = pos0 + j + 1, t1 = t0 + TB < T ? t0 + TB : T;
      if (t0 < t1) mix(att + (size_t)i * Tmax + t0, kv_row(V, half, t0, hd), t1 - t0,
                       O + (size_t)j * ld + (size_t)h * hd, hd, half);
    }
}

/* Every head's attention for layer l (an orphaned `omp for` with its closing barrier). Work items
   are (KV head, slice of its query heads) so that threads share few KV heads evenly. */
static void attention_all(const Model* m, const KV* kv, int l, const float* Q, float* O, int n,
                          int pos0, float* att) {
  const int nh = m->n_heads, nkv = m->n_kv, hd = m->head_dim, group = nh / nkv;
  const int slices = m->n_threads > 1 && group > 1 ? (m->n_threads < group ? m->n_threads : group) : 1;
  const int Tmax = pos0 + n;
#pragma omp for schedule(dynamic, 1)
  for (int item = 0; item < nkv * slices; item++) {
    const int g = item / slices, sl = item % slices;
    const int h0 = g * group + sl * group / slices, h1 = g * group + (sl + 1) * group / slices;
    const size_t base = ((size_t)l * nkv + g) * kv->cap;
    attend(Q, O, nh * hd, h0, h1, n, pos0, kv_row(kv->k, kv->half, base, hd), kv_row(kv->v, kv->half, base, hd),
           kv->half, hd, m->attn_scale, att + (size_t)h0 * n * Tmax);
  }
}

/* Rotate q and k of n tokens and store k, v at their positions (an orphaned `omp for`). */
static void rope_and_store(const Model* m, const KV* kv, int l, float* Q, float* KVn, int n, int pos0) {
  const int nh = m->n_heads, nkv = m->n_kv, hd = m->head_dim, kvd = 2 * nkv * hd;
#pragma omp for schedule(static)
  for (int j = 0; j < n; j++) {
    const float* c = m->cos_t + (size_t)(pos0 + j) * (hd / 2);
    const float* s = m->sin_t + (size_t)(pos0 + j) * (hd / 2);
    float* q = Q + (size_t)j * nh * hd;
    float* kvj = KVn + (size_t)j * kvd;
    for (int h = 0; h < nh; h++) rope(q + h * hd, c, s, hd, m->rope_pairs);
    for (int h = 0; h < nkv; h++) {
      rope(kvj + h * hd, c, s, hd, m->rope_pairs);
      const size_t at = ((size_t)l * nkv + h) * kv->cap + pos0 + j;
      kv_store(kv_row(kv->k, kv->half, at, hd), kv->half, kvj + h * hd, hd);
      kv_store(kv_row(kv->v, kv->half, at, hd), kv->half, kvj + (nkv + h) * hd, hd);
    }
  }
}

/* ---- one token ----------------------------------------------------------------------------- */

typedef struct { float *x, *xb, *ao, *q, *kv, *hb, *att; } StepBuf;

static void step_attention(const Model* m, const KV* kv, int l, StepBuf* b, int pos, Act* a) {
  const Layer* L = &m->layers[l];
#pragma omp single
  rmsnorm(b->xb, b->x, L->attn_norm, m->dim, m->eps);
  act_set(a, b->xb, m->dim);
  matvec_nowait(&L->q, a, b->q);
  matvec_nowait(&L->k, a, b->kv);
  matvec_nowait(&L->v, a, b->kv + L->k.N);
#pragma omp barrier
  rope_and_store(m, kv, l, b->q, b->kv, 1, pos);
  attention_all(m, kv, l, b->q, b->ao, 1, pos, b->att);
  act_set(a, b->ao, m->n_heads * m->head_dim);
  matvec_nowait(&L->o, a, b->xb);
#pragma omp barrier
}

static void step_mlp(const Model* m, int l, StepBuf* b, Act* a) {
  const Layer* L = &m->layers[l];
  const int hidden = m->hidden;
#pragma omp single
  {
    add_into(b->x, b->xb, m->dim);
    rmsnorm(b->xb, b->x, L->ffn_norm, m->dim, m->eps);
  }
  act_set(a, b->xb, m->dim);
#pragma omp for schedule(dynamic, DYN_CHUNK)
  for (int g = 0; g < (hidden + 3) / 4; g++) {
    float gv[4], uv[4];
    act_dot_group4(&L->gate, g, a, gv);
    act_dot_group4(&L->up, g, a, uv);
    for (int j = 0; j < 4 && 4 * g + j < hidden; j++) b->hb[4 * g + j] = silu(gv[j]) * uv[j];
  }
  act_set(a, b->hb, hidden);
  matvec_nowait(&L->down, a, b->xb);
#pragma omp barrier
#pragma omp single
  add_into(b->x, b->xb, m->dim);
}

static int forward_one(const Model* m, const KV* kv, int token, int pos, float* logits) {
  const int dim = m->dim, qd = m->n_heads * m->head_dim, kvd = 2 * m->n_kv * m->head_dim;
  const int widest = dim > m->hidden ? (dim > qd ? dim : qd) : (m->hidden > qd ? m->hidden : qd);
  const size_t floats = (size_t)2 * dim + 2 * qd + kvd + m->hidden + (size_t)m->n_heads * (pos + 1);
  float* mem = malloc(sizeof(float) * (floats + ACT_FLOATS(widest) * (size_t)m->n_threads));
  if (!mem) return -2;
  StepBuf b = {mem, mem + dim, mem + 2 * dim, mem + 2 * dim + qd, mem + 2 * dim + 2 * qd,
               mem + 2 * dim + 2 * qd + kvd, mem + 2 * dim + 2 * qd + kvd + m->hidden};
  jcl_dequant_row(&m->embed, token, b.x);
#pragma omp parallel num_threads(m->n_threads)
  {
    Act a = act_at(mem + floats, omp_get_thread_num(), widest, m->act_q8);
    for (int l = 0; l < m->n_layers; l++) {
      step_attention(m, kv, l, &b, pos, &a);
      step_mlp(m, l, &b, &a);
    }
    if (logits) {
#pragma omp single
      rmsnorm(b.xb, b.x, m->out_norm, dim, m->eps);
      act_set(&a, b.xb, dim);
      matvec_nowait(&m->lm_head, &a, logits);
    }
  }
  free(mem);
  return 0;
}

/* ---- n tokens ------------------------------------------------------------------------------ */

/* A weight is multiplied by the chunk's tokens SEG columns at a time: each group of 4 rows is
   decoded one segment at a time into a buffer that stays in L1, and multiplied into per-(row,
   token) partial sums there, so the decoded floats never travel out to L2 and back. */
#define SEG 256

/* P[(i*n + j)*8 ..] (8 lanes) += row i of the R rows at w (stride ldw) . X_j over kn columns, for
   NT tokens. R and NT are compile-time constants at every call (always inlined), so the
   accumulators stay in registers. Lanes hold the columns k = l mod 8 in order, as one pass over
   the whole row would. */
static inline __attribute__((always_inline)) void tile(const float* w, int ldw, int kn, const float* X,
                                                       int ldx, float* P, int n, const int R,
                                                       const int NT) {
#if JCL_AVX2
  __m256 acc[4][3];
  for (int i = 0; i < R; i++)
    for (int j = 0; j < NT; j++) acc[i][j] = _mm256_loadu_ps(P + (size_t)(i * n + j) * 8);
  int k = 0;
  for (; k + 8 <= kn; k += 8) {
    __m256 xv[3];
    for (int j = 0; j < NT; j++) xv[j] = _mm256_loadu_ps(X + (size_t)j * ldx + k);
    for (int i = 0; i < R; i++) {
      const __m256 wv = _mm256_loadu_ps(w + (size_t)i * ldw + k);
      for (int j = 0; j < NT; j++) acc[i][j] = _mm256_fmadd_ps(wv, xv[j], acc[i][j]);
    }
  }
  for (int i = 0; i < R; i++)
    for (int j = 0; j < NT; j++) {
      float* p = P + (size_t)(i * n + j) * 8;
      _mm256_storeu_ps(p, acc[i][j]);
      for (int kk = k; kk < kn; kk++) p[0] += w[(size_t)i * ldw + kk] * X[(size_t)j * ldx + kk];
    }
#else
  for (int i = 0; i < R; i++)
    for (int j = 0; j < NT; j++) {
      const float* wr = w + (size_t)i * ldw;
      const float* xr = X + (size_t)j * ldx;
      float s = P[(size_t)(i * n + j) * 8];
      for (int k = 0; k < kn; k++) s += wr[k] * xr[k];
      P[(size_t)(i * n + j) * 8] = s;
    }
#endif
}

static void rows_times_tokens(const float* w, int ldw, int kn, int R, const float* X, int ldx,
                              int n, float* P) {
  int j = 0;
  if (R == 4) {
    for (; j + 3 <= n; j += 3) tile(w, ldw, kn, X + (size_t)j * ldx, ldx, P + (size_t)j * 8, n, 4, 3);
    if (n - j == 2) tile(w, ldw, kn, X + (size_t)j * ldx, ldx, P + (size_t)j * 8, n, 4, 2);
    else if (n - j == 1) tile(w, ldw, kn, X + (size_t)j * ldx, ldx, P + (size_t)j * 8, n, 4, 1);
    return;
  }
  for (int i = 0; i < R; i++)
    for (j = 0; j < n; j++)
      tile(w + (size_t)i * ldw, ldw, kn, X + (size_t)j * ldx, ldx, P + (size_t)(i * n + j) * 8, n, 1, 1);
}

static inline float lanes_sum(const float* p) {
#if JCL_AVX2
  return hsum8(_mm256_loadu_ps(p));
#else
  return p[0];  /* the plain tile accumulates in lane 0 only */
#endif
}

/* Floats of one thread's scratch for matmul_n over n tokens: a decoded segment of 4 rows, then
   the partial sums. */
#define MATMUL_SCRATCH(n) ((size_t)4 * SEG + (size_t)32 * (n))

/* The n activation vectors of a chunk as the weights read them: X itself (row stride ldx), and
   with act_q8 their int8 blocks xq[j] and rounded floats XT (row stride K). Shared by the
   threads (written in a worksharing loop before the products). */
typedef struct {
  const float* X;
  int ldx, K, q8;
  const float* XT;
  const XQ* xq;
} BatchAct;

/* Rows r0..r0+R-1 of w times the n tokens into Y (Y[j*ldy + r0 + i]), one segment at a time. */
static void group_times_tokens(const Wt* w, int r0, int R, const float* X, int ldx, int n,
                               float* Y, int ldy, float* scratch) {
  float *seg = scratch, *P = scratch + 4 * SEG;
  memset(P, 0, sizeof(float) * 8 * (size_t)(R * n));
  for (int k0 = 0; k0 < w->K; k0 += SEG) {
    const int kn = w->K - k0 < SEG ? w->K - k0 : SEG;
    const float* rows = seg;
    int ldw = SEG;
    if (w->type == GT_F32) {
      rows = (const float*)(w->data + (size_t)r0 * w->row_bytes) + k0;
      ldw = (int)(w->row_bytes / 4);
    } else {
      for (int i = 0; i < R; i++) jcl_dequant_part(w, r0 + i, k0, kn, seg + (size_t)i * SEG);
    }
    rows_times_tokens(rows, ldw, kn, R, X + k0, ldx, n, P);
  }
  for (int i = 0; i < R; i++)
    for (int j = 0; j < n; j++) Y[(size_t)j * ldy + r0 + i] = lanes_sum(P + (size_t)(i * n + j) * 8);
}

/* Y[j*ldy + r] = (row r of w) . X_j for all rows and n tokens (an orphaned `omp for`).
   scratch: MATMUL_SCRATCH(n) floats of this thread. */
static void matmul_n(const Wt* w, const BatchAct* a, int n, float* Y, int ldy, float* scratch) {
  const int N = w->N;
  if (a->q8 && jcl_q8_supported(w->type)) {
#pragma omp for schedule(dynamic, 1)
    for (int g = 0; g < (N + 3) / 4; g++) {
      float* o = scratch;  /* [n][4] */
      jcl_q8_group4(w, g, a->xq, n, o);
      for (int j = 0; j < n; j++)
        for (int i = 0; i < 4 && 4 * g + i < N; i++) Y[(size_t)j * ldy + 4 * g + i] = o[4 * j + i];
    }
    return;
  }
  const int rounded = a->q8 && is_quant(w->type);
  const float* X = rounded ? a->XT : a->X;
  const int ldx = rounded ? a->K : a->ldx;
#pragma omp for schedule(dynamic, 1)
  for (int g = 0; g < (N + 3) / 4; g++) {
    const int r0 = 4 * g, R = N - r0 < 4 ? N - r0 : 4;
    group_times_tokens(w, r0, R, X, ldx, n, Y, ldy, scratch);
  }
}

typedef struct { float *X, *XB, *AO, *Q, *KV, *HB, *UP, *ATT, *WB, *XT; int8_t* Q8; float* D; int16_t* S16; XQ* XQS; } BatchBuf;

/* Token j's activation row x (K wide) rounded into the chunk's int8 buffers (act_q8 only). */
static void batch_round(const Model* m, BatchBuf* b, int j, const float* x, int K) {
  if (!m->act_q8) return;
  const size_t w = ACT_W(K);
  b->XQS[j] = (XQ){b->Q8 + j * w, b->D + j * (w / 32), b->S16 + j * (w / 16)};
  jcl_x_q8(x, K, b->Q8 + j * w, b->D + j * (w / 32), b->S16 + j * (w / 16), b->XT + j * (size_t)K);
}

static BatchAct batch_act(const Model* m, const BatchBuf* b, const float* X, int ldx, int K) {
  return (BatchAct){X, ldx, K, m->act_q8, b->XT, b->XQS};
}

static void batch_layer(const Model* m, const KV* kv, int l, BatchBuf* b, int n, int pos0) {
  const Layer* L = &m->layers[l];
  const int dim = m->dim, hidden = m->hidden, qd = m->n_heads * m->head_dim;
  const int kvd = 2 * m->n_kv * m->head_dim;
  float* wbuf = b->WB + (size_t)omp_get_thread_num() * MATMUL_SCRATCH(n);
#pragma omp for schedule(static)
  for (int j = 0; j < n; j++) {
    rmsnorm(b->XB + (size_t)j * dim, b->X + (size_t)j * dim, L->attn_norm, dim, m->eps);
    batch_round(m, b, j, b->XB + (size_t)j * dim, dim);
  }
  BatchAct a = batch_act(m, b, b->XB, dim, dim);
  matmul_n(&L->q, &a, n, b->Q, qd, wbuf);
  matmul_n(&L->k, &a, n, b->KV, kvd, wbuf);
  matmul_n(&L->v, &a, n, b->KV + L->k.N, kvd, wbuf);
  rope_and_store(m, kv, l, b->Q, b->KV, n, pos0);
  attention_all(m, kv, l, b->Q, b->AO, n, pos0, b->ATT);
#pragma omp for schedule(static)
  for (int j = 0; j < n; j++) batch_round(m, b, j, b->AO + (size_t)j * qd, qd);
  a = batch_act(m, b, b->AO, qd, qd);
  matmul_n(&L->o, &a, n, b->XB, dim, wbuf);
#pragma omp for schedule(static)
  for (int j = 0; j < n; j++) {
    add_into(b->X + (size_t)j * dim, b->XB + (size_t)j * dim, dim);
    rmsnorm(b->XB + (size_t)j * dim, b->X + (size_t)j * dim, L->ffn_norm, dim, m->eps);
    batch_round(m, b, j, b->XB + (size_t)j * dim, dim);
  }
  a = batch_act(m, b, b->XB, dim, dim);
  matmul_n(&L->gate, &a, n, b->HB, hidden, wbuf);
  matmul_n(&L->up, &a, n, b->UP, hidden, wbuf);
#pragma omp for schedule(static)
  for (int j = 0; j < n; j++) {
    for (int r = 0; r < hidden; r++) {
      float* h = b->HB + (size_t)j * hidden + r;
      *h = silu(*h) * b->UP[(size_t)j * hidden + r];
    }
    batch_round(m, b, j, b->HB + (size_t)j * hidden, hidden);
  }
  a = batch_act(m, b, b->HB, hidden, hidden);
  matmul_n(&L->down, &a, n, b->XB, dim, wbuf);
#pragma omp for schedule(static)
  for (int j = 0; j < n; j++) add_into(b->X + (size_t)j * dim, b->XB + (size_t)j * dim, dim);
}

static int forward_batch(const Model* m, const KV* kv, const int* tokens, int n, int pos0, float* logits) {
  const int dim = m->dim, hidden = m->hidden, qd = m->n_heads * m->head_dim;
  const int kvd = 2 * m->n_kv * m->head_dim, Tmax = pos0 + n;
  const size_t per_token = (size_t)2 * dim + 2 * qd + kvd + 2 * hidden;
  const int widest = dim > hidden ? (dim > qd ? dim : qd) : (hidden > qd ? hidden : qd);
  const size_t floats = per_token * n + (size_t)m->n_heads * n * Tmax + MATMUL_SCRATCH(n) * m->n_threads;
  /* act_q8: x~ (widest floats), then int8 q, scales and sums (ACT_FLOATS covers them), per token */
  const size_t act = m->act_q8 ? ACT_FLOATS(widest) * n : 0;
  /* the XQ array last, at an 8-byte boundary (it holds pointers) */
  const size_t xqs_at = (floats + act + ACT_FLOATS(dim) * m->n_threads + 1) / 2 * 2;
  float* mem = malloc(sizeof(float) * xqs_at + sizeof(XQ) * n);
  if (!mem) return -2;
  BatchBuf b;
  b.X = mem; b.XB = b.X + (size_t)n * dim; b.AO = b.XB + (size_t)n * dim; b.Q = b.AO + (size_t)n * qd;
  b.KV = b.Q + (size_t)n * qd; b.HB = b.KV + (size_t)n * kvd; b.UP = b.HB + (size_t)n * hidden;
  b.ATT = b.UP + (size_t)n * hidden; b.WB = b.ATT + (size_t)m->n_heads * n * Tmax;
  const size_t w = ACT_W(widest);
  b.XT = mem + floats;
  b.Q8 = (int8_t*)(b.XT + w * n);
  b.D = (float*)(b.Q8 + w * n);
  b.S16 = (int16_t*)(b.D + w / 32 * n);
  b.XQS = (XQ*)(mem + xqs_at);
  float* heads = mem + floats + act;  /* each thread's Act for the logits */
  for (int j = 0; j < n; j++) jcl_dequant_row(&m->embed, tokens[j], b.X + (size_t)j * dim);
#pragma omp parallel num_threads(m->n_threads)
  {
    for (int l = 0; l < m->n_layers; l++) batch_layer(m, kv, l, &b, n, pos0);
    if (logits) {
      Act a = act_at(heads, omp_get_thread_num(), dim, m->act_q8);
#pragma omp single
      rmsnorm(b.XB, b.X + (size_t)(n - 1) * dim, m->out_norm, dim, m->eps);
      act_set(&a, b.XB, dim);
      matvec_nowait(&m->lm_head, &a, logits);
    }
  }
  free(mem);
  return 0;
}

/* n tokens at positions pos0..pos0+n-1; logits of the last into `logits` (may be NULL).
   Returns 0, -1 for arguments out of range, -2 when out of memory. */
int jcl_forward(const Model* m, const KV* kv, const int* tokens, int n, int pos0, float* logits) {
  if (n < 1 || pos0 < 0 || pos0 + n > kv->cap || pos0 + n > m->max_pos) return -1;
  for (int j = 0; j < n; j++) if (tokens[j] < 0 || tokens[j] >= m->vocab) return -1;
  return n == 1 ? forward_one(m, kv, tokens[0], pos0, logits)
                : forward_batch(m, kv, tokens, n, pos0, logits);
}

/* ---- pieces for the PyTorch prompt path (long prompt chunks go through a BLAS matmul) -------- */

/* Rows r0..r1-1 of w, dequantized, into out [(r1 - r0), K]. */
void jcl_dequant_rows(const Wt* w, int r0, int r1, float* out, int n_threads) {
#pragma omp parallel for schedule(dynamic, 8) num_threads(n_threads)
  for (int r = r0; r < r1; r++) jcl_dequant_row(w, r, out + (size_t)(r - r0) * w->K);
}

/* y = w x (all rows), the decode kernel's dot products (x rounded first when q8 is set). */
void jcl_matvec(const Wt* w, const float* x, float* y, int n_threads, int q8) {
  float* mem = malloc(sizeof(float) * ACT_FLOATS(w->K));
  if (!mem) return;
  Act a = act_at(mem, 0, w->K, q8);
  act_set(&a, x, w->K);
#pragma omp parallel num_threads(n_threads)
  matvec_nowait(w, &a, y);
  free(mem);
}
