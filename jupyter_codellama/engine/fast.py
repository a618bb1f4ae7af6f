"""Fast CPU decode: the whole one-token forward of a Llama model in one C call.

Why: on a small CPU a decode step of the embedded model spends ≈2/3 of its time reading fp32
weights (≈540 MB per token, memory-bound) and ≈1/3 in Python/dispatch overhead. torch's own
weight-only int4/int8 CPU kernels have no AVX2 path (they are ≈10× *slower* than fp32 linear on an
AVX2-only machine), so neither packing weights for them nor ``torch.compile`` gets us close to
llama.cpp. This module instead compiles (once, with the system C compiler, ≈2 s) a small AVX2 +
OpenMP kernel that runs the full decode step — embedding row, RMSNorm, q/k/v, RoPE, GQA
attention over the KV cache, o_proj, SwiGLU MLP, final norm, lm_head — on the weights of the
GGUF's own blocks (Q4_1 for the linear layers, Q8_0 for the tied embedding / lm_head), repacked
at preparation into groups of 4 rows whose blocks are interleaved, with the fp16 scales widened
to fp32 (see repack_blocks): one sequential stream per group, bytes widened straight from memory,
the activations loaded once for 4 rows. Activations stay fp32 (llama.cpp quantizes them to int8,
which is faster but changes the tokens). Attention walks the KV in blocks of 64 positions for all
the queries of a KV head, with a vectorized exp.

Exactness: the packed blocks are taken from the GGUF the model was converted from, and every
tensor is checked, at preparation time, to dequantize *bit for bit* to the fp32 weight that the
eager model holds; a tensor that does not match is used in fp32 instead. The weights are hence
the very same; only the order of floating-point summation differs from torch's kernels (as it
differs between torch builds), and the tests check that greedy tokens are identical.

    prepare_fast_decoder(model, gguf_path=None)  → FastDecoder   (raises FastPathUnavailable)
    FastDecoder.session(cache)                   → FastSession   (borrows the DynamicCache's KV)
      session.step(token) → logits [V]           one decode step (C), returns a torch view
      session.prefill(tokens) → logits [V]       a short prompt tail in one batched C call
                                                 (fl_forward_batch), the last token's logits
      session.close()                            appends the new KV back into the DynamicCache
    BackgroundFastPath                           prepares in a thread after load; ``.decoder``
                                                 is None until ready (never blocks a request)

The KV of the tokens decoded in C lives in the session's own buffer (segment B); the prompt's KV
(segment A) is read in place from the DynamicCache, so starting a session costs no copy, and on
close the new KV is appended in place to a buffer with spare room behind the DynamicCache's views
(no copy of the whole prompt's KV per request).
"""
from __future__ import annotations

import atexit
import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

T_F32, T_Q4_1, T_Q8_0 = 0, 1, 2
_BLOCK_BYTES = {T_Q4_1: 20, T_Q8_0: 34}


DEFAULT_THREADS = int(os.environ.get("JUPYTER_CODELLAMA_FAST_THREADS", "1") or 1)


class FastPathUnavailable(RuntimeError):
    """The fast path cannot serve this model here (the caller uses the eager path)."""


# ---------------------------------------------------------------------------------------------
# The C kernel

C_SOURCE = r"""
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <omp.h>

typedef struct { const void* data; const float* d; const float* m; int32_t type, N, K, pad; } Wt;
typedef struct {
  const float* attn_norm; const float* ffn_norm;
  Wt q, k, v, o, gate, up, down;
  const float* kA; const float* vA; int64_t strideA;   /* segment A: [n_kv, *, hd], head stride */
  float* kB; float* vB;                                /* segment B: [n_kv, capB, hd] */
} Layer;
typedef struct {
  int32_t n_layers, dim, hidden, n_heads, n_kv, head_dim, vocab, n_threads;
  float eps, attn_scale;
  const float* embed; const float* out_norm; Wt lm_head;
  const float* cos_t; const float* sin_t;              /* [max_pos, head_dim] */
  int32_t lenA, capB, max_pos, pad;
  Layer* layers;
  float* scratch;
} Model;

static inline float hsum8(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  __m128 sh = _mm_movehdup_ps(lo);
  __m128 s = _mm_add_ps(lo, sh);
  sh = _mm_movehl_ps(sh, s);
  s = _mm_add_ss(s, sh);
  return _mm_cvtss_f32(s);
}

static float dot_f32(const float* w, const float* x, int K) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  int i = 0;
  for (; i + 32 <= K; i += 32) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 16), _mm256_loadu_ps(x + i + 16), a2);
    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 24), _mm256_loadu_ps(x + i + 24), a3);
  }
  for (; i + 8 <= K; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
  float s = hsum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  for (; i < K; i++) s += w[i] * x[i];
  return s;
}

/* Quantized weights are repacked at preparation (see repack_blocks) in groups of 4 rows, the
   4 rows' blocks interleaved so one group is one sequential stream: for block i, the quants of
   rows 0..3 (16 bytes each for Q4_1, 32 for Q8_0), then the block scales d and (Q4_1) the
   minimums m as fp32 [groups, nb, 4]. Rows are padded with zeros to a multiple of 4.
   Q4_1: element j of a block = low nibble of byte j, j+16 = its high nibble; w = d*q + m, so
   sum_j w_j x_j = sum_b d_b * (sum_j q_j x_j) + sum_b m_b * xs_b (block sums xs).
   Q8_0: w = d*q.
   Bytes are widened straight from memory (vpmovzxbd m64) and the 4 rows share the activation
   loads: 1.8x faster than reading the 20-byte GGUF blocks in place, and the interleaving keeps
   the long rows (down_proj) from splitting the prefetcher's stream (measured). */
#define Q41_BLOCK(QB, D, ACC) {                                                                    \
    __m256i t0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(QB)));                     \
    __m256i t1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)((QB) + 8)));               \
    __m256 p0 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_and_si256(t0, m4)), x0);                  \
    __m256 p1 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_and_si256(t1, m4)), x1);                  \
    p0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(t0, 4)), x2, p0);                   \
    p1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(t1, 4)), x3, p1);                   \
    ACC = _mm256_fmadd_ps(_mm256_broadcast_ss(D), _mm256_add_ps(p0, p1), ACC); }
#define Q80_CVT(P) _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)(P))))
#define Q80_BLOCK(QB, D, ACC) {                                                                    \
    __m256 p0 = _mm256_mul_ps(Q80_CVT(QB), x0);                                                    \
    __m256 p1 = _mm256_mul_ps(Q80_CVT((QB) + 8), x1);                                              \
    p0 = _mm256_fmadd_ps(Q80_CVT((QB) + 16), x2, p0);                                              \
    p1 = _mm256_fmadd_ps(Q80_CVT((QB) + 24), x3, p1);                                              \
    ACC = _mm256_fmadd_ps(_mm256_broadcast_ss(D), _mm256_add_ps(p0, p1), ACC); }

/* Rows 4g..4g+3 of w into out[0..3] (rows past N: whatever, the caller drops them). */
static void dot_group4(const Wt* w, int g, const float* x, const float* xs, float* out) {
  const int nb = w->K / 32;
  if (w->type == 0) {
    for (int j = 0; j < 4; j++) {
      const int r = 4 * g + j < w->N ? 4 * g + j : w->N - 1;
      out[j] = dot_f32((const float*)w->data + (size_t)r * w->K, x, w->K);
    }
    return;
  }
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  const float* d = w->d + (size_t)g * nb * 4;
  float mv[4] = {0.f, 0.f, 0.f, 0.f};
#define GROUP4_LOOP(QTYPE, QBYTES, BLOCK) {                                                       \
    const QTYPE* q = (const QTYPE*)w->data + (size_t)g * nb * 4 * (QBYTES);                      \
    for (int i = 0; i < nb; i++) {                                                               \
      const float* xb = x + (size_t)i * 32;                                                      \
      const __m256 x0 = _mm256_loadu_ps(xb), x1 = _mm256_loadu_ps(xb + 8);                       \
      const __m256 x2 = _mm256_loadu_ps(xb + 16), x3 = _mm256_loadu_ps(xb + 24);                 \
      const QTYPE* b = q + (size_t)i * 4 * (QBYTES);                                             \
      const float* di = d + (size_t)i * 4;                                                       \
      BLOCK(b, di, a0) BLOCK(b + (QBYTES), di + 1, a1)                                           \
      BLOCK(b + 2 * (QBYTES), di + 2, a2) BLOCK(b + 3 * (QBYTES), di + 3, a3)                    \
    } }
  if (w->type == 1) {
    const __m256i m4 = _mm256_set1_epi32(0xF);
    GROUP4_LOOP(uint8_t, 16, Q41_BLOCK)
    /* the minimums' part for the 4 rows at once */
    const float* mg = w->m + (size_t)g * nb * 4;
    __m128 ms = _mm_setzero_ps();
    for (int i = 0; i < nb; i++) ms = _mm_fmadd_ps(_mm_loadu_ps(mg + (size_t)i * 4), _mm_set1_ps(xs[i]), ms);
    _mm_storeu_ps(mv, ms);
  } else {
    GROUP4_LOOP(int8_t, 32, Q80_BLOCK)
  }
#undef GROUP4_LOOP
  out[0] = hsum8(a0) + mv[0];
  out[1] = hsum8(a1) + mv[1];
  out[2] = hsum8(a2) + mv[2];
  out[3] = hsum8(a3) + mv[3];
}

/* y = w x for all rows: an orphaned `omp for` over groups of 4 rows (call it inside the
   parallel region), without the barrier at its end. */
static void matvec_nowait(const Wt* w, const float* x, const float* xs, float* y) {
  const int N = w->N, groups = (N + 3) / 4;
#pragma omp for schedule(static) nowait
  for (int g = 0; g < groups; g++) {
    float o[4];
    dot_group4(w, g, x, xs, o);
    for (int j = 0; j < 4 && 4 * g + j < N; j++) y[4 * g + j] = o[j];
  }
}

static void block_sums(const float* x, int K, float* xs) {
  for (int b = 0; b < K / 32; b++) {
    float s = 0.f;
    for (int j = 0; j < 32; j++) s += x[b * 32 + j];
    xs[b] = s;
  }
}

static void rmsnorm(float* out, const float* x, const float* w, int n, float eps) {
  float ss = 0.f;
  for (int i = 0; i < n; i++) ss += x[i] * x[i];
  float r = 1.0f / sqrtf(ss / (float)n + eps);
  for (int i = 0; i < n; i++) out[i] = w[i] * (x[i] * r);
}

static void rope(float* v, const float* c, const float* s, int hd) {
  int half = hd / 2;
  for (int i = 0; i < half; i++) {
    float a = v[i], b = v[i + half];
    v[i] = a * c[i] + (-b) * s[i];
    v[i + half] = b * c[i + half] + a * s[i + half];
  }
}

/* ---- Attention. exp8: e^x for 8 floats (x <= 0 here), Cephes' range reduction and polynomial,
   within 2 ulp of exp (1.25 measured, checked in the tests), about 1.4 ns an element here, several
   times cheaper than calling expf per score. */
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

void fl_exp(const float* x, float* y, int n) {  /* for the tests */
  int i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, exp8(_mm256_loadu_ps(x + i)));
  for (; i < n; i++) { float t[8] = {x[i]}, o[8]; _mm256_storeu_ps(o, exp8(_mm256_loadu_ps(t))); y[i] = o[0]; }
}

/* Helpers with C = hd/8 a compile-time constant once inlined; the chunk registers are named
   variables, not arrays (gcc copied such arrays through the stack at every call, with
   store-forwarding stalls: the value mix was 1.7x slower). */
#define CH8(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)

/* out[t] = (q . k_t) * scale for `count` key rows k_t = K + t*hd. Four rows at a time, reduced
   with horizontal adds (no per-row horizontal sum). */
static inline __attribute__((always_inline)) void scores_c(const float* q, const float* K, int count,
                                                            float scale, float* out, const int C) {
#define QLOAD(c) const __m256 q##c = C > c ? _mm256_loadu_ps(q + c * 8) : _mm256_setzero_ps();
  CH8(QLOAD)
#undef QLOAD
  const int hd = C * 8;
  const __m128 sc = _mm_set1_ps(scale);
  int t = 0;
  for (; t + 4 <= count; t += 4) {
    const float* k = K + (size_t)t * hd;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
#define QK4(c) if (C > c) {                                                        \
      a0 = _mm256_fmadd_ps(q##c, _mm256_loadu_ps(k + c * 8), a0);                 \
      a1 = _mm256_fmadd_ps(q##c, _mm256_loadu_ps(k + hd + c * 8), a1);            \
      a2 = _mm256_fmadd_ps(q##c, _mm256_loadu_ps(k + 2 * hd + c * 8), a2);        \
      a3 = _mm256_fmadd_ps(q##c, _mm256_loadu_ps(k + 3 * hd + c * 8), a3); }
    CH8(QK4)
#undef QK4
    __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    _mm_storeu_ps(out + t, _mm_mul_ps(s, sc));
  }
  for (; t < count; t++) {
    const float* k = K + (size_t)t * hd;
    __m256 a = _mm256_setzero_ps();
#define QK1(c) if (C > c) a = _mm256_fmadd_ps(q##c, _mm256_loadu_ps(k + c * 8), a);
    CH8(QK1)
#undef QK1
    out[t] = hsum8(a) * scale;
  }
}

static void scores(const float* q, const float* K, int count, float scale, float* out, int hd) {
  switch (hd) {
    case 64: scores_c(q, K, count, scale, out, 8); break;
    case 32: scores_c(q, K, count, scale, out, 4); break;
    default: for (int c = 1; c <= 8; c++) if (hd == c * 8) { scores_c(q, K, count, scale, out, c); break; }
  }
}

/* o += sum_t p[t] * v_t for `count` value rows v_t = V + t*hd. */
static inline __attribute__((always_inline)) void mix_c(const float* p, const float* V, int count, float* o, const int C) {
#define OLOAD(c) __m256 o##c = C > c ? _mm256_loadu_ps(o + c * 8) : _mm256_setzero_ps();
  CH8(OLOAD)
#undef OLOAD
  const int hd = C * 8;
  for (int t = 0; t < count; t++) {
    const __m256 pt = _mm256_broadcast_ss(p + t);
    const float* v = V + (size_t)t * hd;
#define PV(c) if (C > c) o##c = _mm256_fmadd_ps(pt, _mm256_loadu_ps(v + c * 8), o##c);
    CH8(PV)
#undef PV
  }
#define OSTORE(c) if (C > c) _mm256_storeu_ps(o + c * 8, o##c);
  CH8(OSTORE)
#undef OSTORE
}

static void mix(const float* p, const float* V, int count, float* o, int hd) {
  switch (hd) {
    case 64: mix_c(p, V, count, o, 8); break;
    case 32: mix_c(p, V, count, o, 4); break;
    default: for (int c = 1; c <= 8; c++) if (hd == c * 8) { mix_c(p, V, count, o, c); break; }
  }
}

/* Causal attention for one KV head: the queries of its heads h0..h0+nhq-1 (a slice of its group)
   for n consecutive tokens, token j at absolute position pos0 + j (it sees positions
   0..pos0+j). Query (head h, token j) is Q + j*ldq + h*hd, its output O + j*ldq + h*hd. The KV
   is split in two contiguous segments: rows 0..lenA-1 at kA/vA, the rest at kB/vB (row stride
   hd). att: scratch nhq * n * (pos0 + n) floats. Keys and values are walked in blocks of 64
   positions, each block read once for all the queries. */
static void attend(const float* Q, float* O, int ldq, int h0, int nhq, int n, int pos0,
                   const float* kA, const float* vA, int lenA, const float* kB, const float* vB,
                   int hd, float scale, float* att) {
  const int Tmax = pos0 + n, TB = 64, nq = nhq * n;
  for (int t0 = 0; t0 < Tmax; t0 += TB) {
    for (int i = 0; i < nq; i++) {
      const int h = h0 + i / n, j = i % n, T = pos0 + j + 1, t1 = t0 + TB < T ? t0 + TB : T;
      if (t0 >= t1) continue;
      float* a = att + (size_t)i * Tmax;
      const float* q = Q + (size_t)j * ldq + (size_t)h * hd;
      if (t0 < lenA) {
        const int e = t1 < lenA ? t1 : lenA;
        scores(q, kA + (size_t)t0 * hd, e - t0, scale, a + t0, hd);
      }
      const int s = t0 > lenA ? t0 : lenA;
      if (s < t1) scores(q, kB + (size_t)(s - lenA) * hd, t1 - s, scale, a + s, hd);
    }
  }
  for (int i = 0; i < nq; i++) {
    const int h = h0 + i / n, j = i % n, T = pos0 + j + 1;
    float* a = att + (size_t)i * Tmax;
    __m256 mx8 = _mm256_set1_ps(-INFINITY);
    int t = 0;
    for (; t + 8 <= T; t += 8) mx8 = _mm256_max_ps(mx8, _mm256_loadu_ps(a + t));
    float mv[8], mx;
    _mm256_storeu_ps(mv, mx8);
    mx = mv[0];
    for (int k = 1; k < 8; k++) if (mv[k] > mx) mx = mv[k];
    for (; t < T; t++) if (a[t] > mx) mx = a[t];
    const __m256 m8 = _mm256_set1_ps(mx);
    __m256 s8 = _mm256_setzero_ps();
    for (t = 0; t + 8 <= T; t += 8) {
      const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(a + t), m8));
      _mm256_storeu_ps(a + t, e);
      s8 = _mm256_add_ps(s8, e);
    }
    float sum = hsum8(s8);
    for (; t < T; t++) {
      float tmp[8] = {a[t] - mx}, o[8];
      _mm256_storeu_ps(o, exp8(_mm256_loadu_ps(tmp)));
      a[t] = o[0];
      sum += o[0];
    }
    const float inv = 1.0f / sum;
    const __m256 inv8 = _mm256_set1_ps(inv);
    for (t = 0; t + 8 <= T; t += 8) _mm256_storeu_ps(a + t, _mm256_mul_ps(_mm256_loadu_ps(a + t), inv8));
    for (; t < T; t++) a[t] *= inv;
    memset(O + (size_t)j * ldq + (size_t)h * hd, 0, sizeof(float) * hd);
  }
  for (int t0 = 0; t0 < Tmax; t0 += TB) {
    for (int i = 0; i < nq; i++) {
      const int h = h0 + i / n, j = i % n, T = pos0 + j + 1, t1 = t0 + TB < T ? t0 + TB : T;
      if (t0 >= t1) continue;
      const float* a = att + (size_t)i * Tmax;
      float* o = O + (size_t)j * ldq + (size_t)h * hd;
      if (t0 < lenA) {
        const int e = t1 < lenA ? t1 : lenA;
        mix(a + t0, vA + (size_t)t0 * hd, e - t0, o, hd);
      }
      const int s = t0 > lenA ? t0 : lenA;
      if (s < t1) mix(a + s, vB + (size_t)(s - lenA) * hd, t1 - s, o, hd);
    }
  }
}

/* All heads' attention for n tokens (an orphaned `omp for`): work items are (KV head, slice of
   its query heads), so each thread reads a KV block once for all its queries and 2 threads
   share 3 KV heads evenly enough. att: scratch nh * n * (pos0 + n) floats. */
static void attention_all(const Model* m, const Layer* L, const float* Q, float* O, int n, int pos0, float* att) {
  const int nh = m->n_heads, nkv = m->n_kv, hd = m->head_dim, group = nh / nkv;
  const int slices = m->n_threads > 1 && group > 1 ? (m->n_threads < group ? m->n_threads : group) : 1;
  const int Tmax = pos0 + n;
#pragma omp for schedule(static)
  for (int item = 0; item < nkv * slices; item++) {
    const int g = item / slices, sl = item % slices;
    const int h0 = g * group + sl * group / slices, h1 = g * group + (sl + 1) * group / slices;
    attend(Q, O, m->n_heads * hd, h0, h1 - h0, n, pos0,
           L->kA + (size_t)g * L->strideA, L->vA + (size_t)g * L->strideA, m->lenA,
           L->kB + (size_t)g * m->capB * hd, L->vB + (size_t)g * m->capB * hd,
           hd, m->attn_scale, att + (size_t)h0 * n * Tmax);
  }
}

int fl_abi_version(void) { return 8; }

/* One decode step for `token` at absolute position `pos`; logits may be NULL (prompt tokens). */
int fl_forward(Model* m, int token, int pos, float* logits) {
  const int dim = m->dim, hidden = m->hidden, nh = m->n_heads, nkv = m->n_kv, hd = m->head_dim;
  const int lenA = m->lenA, iB = pos - lenA;
  if (iB < 0 || iB >= m->capB || pos >= m->max_pos || token < 0 || token >= m->vocab) return -1;
  float* x = m->scratch;                       /* [dim] residual stream */
  float* xb = x + dim;                         /* [max(dim, ...)] normed input */
  float* ao = xb + dim;                        /* [nh*hd] attention output */
  float* q = ao + nh * hd;                     /* [nh*hd] */
  float* kv = q + nh * hd;                     /* [2*nkv*hd] */
  float* hb = kv + 2 * nkv * hd;               /* [hidden] */
  float* att = hb + hidden;                    /* [nh, T] */
  memcpy(x, m->embed + (size_t)token * dim, sizeof(float) * dim);
  const float* c = m->cos_t + (size_t)pos * hd;
  const float* s = m->sin_t + (size_t)pos * hd;

#pragma omp parallel num_threads(m->n_threads)
  {
    float xs[256];
    for (int l = 0; l < m->n_layers; l++) {
      Layer* L = &m->layers[l];
#pragma omp single
      rmsnorm(xb, x, L->attn_norm, dim, m->eps);
      block_sums(xb, dim, xs);
      matvec_nowait(&L->q, xb, xs, q);
      matvec_nowait(&L->k, xb, xs, kv);
      matvec_nowait(&L->v, xb, xs, kv + L->k.N);
#pragma omp barrier
#pragma omp single
      {
        for (int h = 0; h < nh; h++) rope(q + h * hd, c, s, hd);
        for (int h = 0; h < nkv; h++) {
          rope(kv + h * hd, c, s, hd);
          memcpy(L->kB + ((size_t)h * m->capB + iB) * hd, kv + h * hd, sizeof(float) * hd);
          memcpy(L->vB + ((size_t)h * m->capB + iB) * hd, kv + (nkv + h) * hd, sizeof(float) * hd);
        }
      }
      attention_all(m, L, q, ao, 1, pos, att);
      block_sums(ao, nh * hd, xs);
      matvec_nowait(&L->o, ao, xs, xb);
#pragma omp barrier
#pragma omp single
      {
        for (int i = 0; i < dim; i++) x[i] += xb[i];
        rmsnorm(xb, x, L->ffn_norm, dim, m->eps);
      }
      block_sums(xb, dim, xs);
#pragma omp for schedule(static)
      for (int gi = 0; gi < (hidden + 3) / 4; gi++) {
        float g[4], u[4];
        dot_group4(&L->gate, gi, xb, xs, g);
        dot_group4(&L->up, gi, xb, xs, u);
        for (int j = 0; j < 4 && 4 * gi + j < hidden; j++) hb[4 * gi + j] = (g[j] / (1.0f + expf(-g[j]))) * u[j];
      }
      block_sums(hb, hidden, xs);
      matvec_nowait(&L->down, hb, xs, xb);
#pragma omp barrier
#pragma omp single
      for (int i = 0; i < dim; i++) x[i] += xb[i];
    }
    if (logits) {
#pragma omp single
      rmsnorm(xb, x, m->out_norm, dim, m->eps);
      block_sums(xb, dim, xs);
      matvec_nowait(&m->lm_head, xb, xs, logits);
    }
  }
  return 0;
}

/* ---- Batched prompt forward: n consecutive tokens. Each weight row is decoded ONCE into fp32
   (d*q + m, resp. d*q: exactly the eager model's weight) and multiplied with all n activation
   vectors, so a batch costs about one token's decoding plus n times the multiply-adds. */

static void dequant_row(const Wt* w, int r, float* out) {
  const int nb = w->K / 32, g = r / 4, j = r % 4;
  const float* dr = w->d + (size_t)g * nb * 4 + j;
  if (w->type == 1) {
    const uint8_t* q = (const uint8_t*)w->data + (size_t)g * nb * 64 + j * 16;
    const float* mr = w->m + (size_t)g * nb * 4 + j;
    const __m256i m4 = _mm256_set1_epi32(0xF);
    for (int i = 0; i < nb; i++) {
      const __m256 d = _mm256_broadcast_ss(dr + (size_t)i * 4), m = _mm256_broadcast_ss(mr + (size_t)i * 4);
      const uint8_t* b = q + (size_t)i * 64;
      __m256i t0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)b));
      __m256i t1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(b + 8)));
      float* o = out + (size_t)i * 32;
      _mm256_storeu_ps(o, _mm256_add_ps(_mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_and_si256(t0, m4))), m));
      _mm256_storeu_ps(o + 8, _mm256_add_ps(_mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_and_si256(t1, m4))), m));
      _mm256_storeu_ps(o + 16, _mm256_add_ps(_mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_srli_epi32(t0, 4))), m));
      _mm256_storeu_ps(o + 24, _mm256_add_ps(_mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_srli_epi32(t1, 4))), m));
    }
  } else {  /* Q8_0 */
    const int8_t* q = (const int8_t*)w->data + (size_t)g * nb * 128 + j * 32;
    for (int i = 0; i < nb; i++) {
      const __m256 d = _mm256_broadcast_ss(dr + (size_t)i * 4);
      const int8_t* b = q + (size_t)i * 128;
      float* o = out + (size_t)i * 32;
      _mm256_storeu_ps(o, _mm256_mul_ps(d, Q80_CVT(b)));
      _mm256_storeu_ps(o + 8, _mm256_mul_ps(d, Q80_CVT(b + 8)));
      _mm256_storeu_ps(o + 16, _mm256_mul_ps(d, Q80_CVT(b + 16)));
      _mm256_storeu_ps(o + 24, _mm256_mul_ps(d, Q80_CVT(b + 24)));
    }
  }
}

/* Y[j*ldy + r] = w_r . x_j for R rows (w: R dequantized rows of K floats) and NT tokens: one
   accumulator per (row, token), summed over 8-float chunks in order, then hsum8. Each x load
   serves R rows, each w load NT tokens. */
static inline __attribute__((always_inline)) void f32_tile(
    const float* w, int K, const float* x, int ldx, float* y, int ldy, const int R, const int NT) {
  __m256 acc[4][3];
  for (int i = 0; i < R; i++) for (int j = 0; j < NT; j++) acc[i][j] = _mm256_setzero_ps();
  for (int k = 0; k < K; k += 8) {
    __m256 xv[3];
    for (int j = 0; j < NT; j++) xv[j] = _mm256_loadu_ps(x + (size_t)j * ldx + k);
    for (int i = 0; i < R; i++) {
      const __m256 wv = _mm256_loadu_ps(w + (size_t)i * K + k);
      for (int j = 0; j < NT; j++) acc[i][j] = _mm256_fmadd_ps(wv, xv[j], acc[i][j]);
    }
  }
  for (int i = 0; i < R; i++) for (int j = 0; j < NT; j++) y[(size_t)j * ldy + i] = hsum8(acc[i][j]);
}

static void tile_rows(const float* w, int K, const float* X, int ldx, int n, float* y, int ldy, const int R) {
  int j = 0;
  for (; j + 3 <= n; j += 3) f32_tile(w, K, X + (size_t)j * ldx, ldx, y + (size_t)j * ldy, ldy, R, 3);
  if (n - j == 2) f32_tile(w, K, X + (size_t)j * ldx, ldx, y + (size_t)j * ldy, ldy, R, 2);
  else if (n - j == 1) f32_tile(w, K, X + (size_t)j * ldx, ldx, y + (size_t)j * ldy, ldy, R, 1);
}

/* Y[j*ldy + r] = (row r of w) . X[j*ldx ...] for all rows and the n tokens; an orphaned
   `omp for` over groups of 4 rows (call it inside the parallel region). wbuf: 4*K floats. */
static void matmul_n(const Wt* w, const float* X, int ldx, int n, float* Y, int ldy, float* wbuf) {
  const int K = w->K, N = w->N, groups = (N + 3) / 4;
#pragma omp for schedule(static)
  for (int gi = 0; gi < groups; gi++) {
    const int r0 = gi * 4, R = N - r0 < 4 ? N - r0 : 4;
    const float* wr;
    if (w->type == 0) wr = (const float*)w->data + (size_t)r0 * K;
    else { for (int i = 0; i < R; i++) dequant_row(w, r0 + i, wbuf + (size_t)i * K); wr = wbuf; }
    if (R == 4) tile_rows(wr, K, X, ldx, n, Y + r0, ldy, 4);
    else for (int i = 0; i < R; i++) tile_rows(wr + (size_t)i * K, K, X, ldx, n, Y + r0 + i, ldy, 1);
  }
}

/* Floats of scratch fl_forward_batch needs for n tokens ending at position pos0+n. */
long fl_batch_scratch(const Model* m, int n, int pos0) {
  const long dim = m->dim, hidden = m->hidden, qd = (long)m->n_heads * m->head_dim, kvd = 2L * m->n_kv * m->head_dim;
  long wide = dim > hidden ? dim : hidden; if (qd > wide) wide = qd;
  return n * (2 * dim + 2 * qd + kvd + 2 * hidden + wide / 32 + 16) + (long)m->n_heads * n * (pos0 + n)
         + 4L * wide * (m->n_threads > 0 ? m->n_threads : 1) + 64;
}

/* n consecutive prompt tokens at positions pos0..pos0+n-1 (KV into segment B); logits of the
   last one into logits_last (may be NULL). */
int fl_forward_batch(Model* m, const int* tokens, int n, int pos0, float* logits_last) {
  const int dim = m->dim, hidden = m->hidden, nh = m->n_heads, nkv = m->n_kv, hd = m->head_dim;
  const int lenA = m->lenA, iB0 = pos0 - lenA;
  if (n < 1 || iB0 < 0 || iB0 + n > m->capB || pos0 + n > m->max_pos) return -1;
  for (int j = 0; j < n; j++) if (tokens[j] < 0 || tokens[j] >= m->vocab) return -1;
  const int qd = nh * hd, kvd = 2 * nkv * hd;
  int wide = dim > hidden ? dim : hidden; if (qd > wide) wide = qd;
  const int ldxs = wide / 32;
  const int Tmax = pos0 + n;
  float* X = m->scratch;                        /* [n, dim] residual streams */
  float* XB = X + (size_t)n * dim;              /* [n, dim] */
  float* AO = XB + (size_t)n * dim;             /* [n, qd] */
  float* Q = AO + (size_t)n * qd;               /* [n, qd] */
  float* KV = Q + (size_t)n * qd;               /* [n, kvd] */
  float* HB = KV + (size_t)n * kvd;             /* [n, hidden] */
  float* XS = HB + (size_t)n * hidden;          /* [n, ldxs] spare */
  float* UP = XS + (size_t)n * ldxs + 16;       /* [n, hidden] */
  float* ATT = UP + (size_t)n * hidden;         /* [nh, n, Tmax] */
  float* WB = ATT + (size_t)nh * n * Tmax;      /* [n_threads, 4, wide] dequantized rows */
  for (int j = 0; j < n; j++) memcpy(X + (size_t)j * dim, m->embed + (size_t)tokens[j] * dim, sizeof(float) * dim);

#pragma omp parallel num_threads(m->n_threads)
  {
    float* wbuf = WB + (size_t)omp_get_thread_num() * 4 * wide;
    for (int l = 0; l < m->n_layers; l++) {
      Layer* L = &m->layers[l];
#pragma omp for schedule(static)
      for (int j = 0; j < n; j++) rmsnorm(XB + (size_t)j * dim, X + (size_t)j * dim, L->attn_norm, dim, m->eps);
      matmul_n(&L->q, XB, dim, n, Q, qd, wbuf);
      matmul_n(&L->k, XB, dim, n, KV, kvd, wbuf);
      matmul_n(&L->v, XB, dim, n, KV + L->k.N, kvd, wbuf);
#pragma omp for schedule(static)
      for (int j = 0; j < n; j++) {
        const float* c = m->cos_t + (size_t)(pos0 + j) * hd;
        const float* s = m->sin_t + (size_t)(pos0 + j) * hd;
        float* q = Q + (size_t)j * qd;
        float* kv = KV + (size_t)j * kvd;
        for (int h = 0; h < nh; h++) rope(q + h * hd, c, s, hd);
        for (int h = 0; h < nkv; h++) {
          rope(kv + h * hd, c, s, hd);
          memcpy(L->kB + ((size_t)h * m->capB + iB0 + j) * hd, kv + h * hd, sizeof(float) * hd);
          memcpy(L->vB + ((size_t)h * m->capB + iB0 + j) * hd, kv + (nkv + h) * hd, sizeof(float) * hd);
        }
      }
      attention_all(m, L, Q, AO, n, pos0, ATT);
      matmul_n(&L->o, AO, qd, n, XB, dim, wbuf);
#pragma omp for schedule(static)
      for (int j = 0; j < n; j++) {
        float* x = X + (size_t)j * dim;
        float* xb = XB + (size_t)j * dim;
        for (int i = 0; i < dim; i++) x[i] += xb[i];
        rmsnorm(xb, x, L->ffn_norm, dim, m->eps);
      }
      matmul_n(&L->gate, XB, dim, n, HB, hidden, wbuf);
      matmul_n(&L->up, XB, dim, n, UP, hidden, wbuf);
#pragma omp for schedule(static)
      for (int j = 0; j < n; j++) {
        float* hb = HB + (size_t)j * hidden;
        const float* up = UP + (size_t)j * hidden;
        for (int r = 0; r < hidden; r++) { const float g = hb[r]; hb[r] = (g / (1.0f + expf(-g))) * up[r]; }
      }
      matmul_n(&L->down, HB, hidden, n, XB, dim, wbuf);
#pragma omp for schedule(static)
      for (int j = 0; j < n; j++) {
        float* x = X + (size_t)j * dim;
        const float* xb = XB + (size_t)j * dim;
        for (int i = 0; i < dim; i++) x[i] += xb[i];
      }
    }
    if (logits_last) {
      float* xl = X + (size_t)(n - 1) * dim;
      float* xb = XB;
      float xs[256];
#pragma omp single
      rmsnorm(xb, xl, m->out_norm, dim, m->eps);
      block_sums(xb, dim, xs);
      matvec_nowait(&m->lm_head, xb, xs, logits_last);
    }
  }
  return 0;
}
"""

_ABI_VERSION = 8
_CFLAGS = ["-O3", "-mavx2", "-mfma", "-mf16c", "-fopenmp", "-ffp-contract=off", "-shared", "-fPIC"]


class _Wt(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("d", ctypes.c_void_p), ("m", ctypes.c_void_p),
                ("type", ctypes.c_int32), ("N", ctypes.c_int32), ("K", ctypes.c_int32),
                ("pad", ctypes.c_int32)]


class _Layer(ctypes.Structure):
    _fields_ = [("attn_norm", ctypes.c_void_p), ("ffn_norm", ctypes.c_void_p),
                *[(n, _Wt) for n in ("q", "k", "v", "o", "gate", "up", "down")],
                ("kA", ctypes.c_void_p), ("vA", ctypes.c_void_p), ("strideA", ctypes.c_int64),
                ("kB", ctypes.c_void_p), ("vB", ctypes.c_void_p)]


class _Model(ctypes.Structure):
    _fields_ = [*[(n, ctypes.c_int32) for n in ("n_layers", "dim", "hidden", "n_heads", "n_kv",
                                                 "head_dim", "vocab", "n_threads")],
                ("eps", ctypes.c_float), ("attn_scale", ctypes.c_float),
                ("embed", ctypes.c_void_p), ("out_norm", ctypes.c_void_p), ("lm_head", _Wt),
                ("cos_t", ctypes.c_void_p), ("sin_t", ctypes.c_void_p),
                ("lenA", ctypes.c_int32), ("capB", ctypes.c_int32), ("max_pos", ctypes.c_int32),
                ("pad", ctypes.c_int32),
                ("layers", ctypes.POINTER(_Layer)), ("scratch", ctypes.c_void_p)]


_lib = None
_lib_lock = threading.Lock()


def cpu_supports_avx2() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    line = next((l for l in flags.splitlines() if l.startswith("flags")), "")
    have = set(line.split())
    return {"avx2", "fma", "f16c"} <= have


def _kernel_dir() -> Path:
    from ..config import default_cache_dir

    return Path(default_cache_dir()) / "kernels"


def load_kernel(cache_dir: str | os.PathLike | None = None):
    """Compile (once per source version, cached on disk) and load the C kernel."""
    global _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        if sys.platform != "linux" or not cpu_supports_avx2():
            raise FastPathUnavailable("the fast decode kernel needs Linux on an x86 CPU with AVX2/FMA/F16C")
        cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
        if not cc:
            raise FastPathUnavailable("no C compiler (gcc) found for the fast decode kernel")
        digest = hashlib.sha256((C_SOURCE + " ".join(_CFLAGS)).encode()).hexdigest()[:16]
        folder = Path(cache_dir) / "kernels" if cache_dir else _kernel_dir()
        target = folder / f"fastllama-{digest}.so"
        if not target.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=folder) as tmp:
                src = Path(tmp) / "fastllama.c"
                src.write_text(C_SOURCE)
                out = Path(tmp) / target.name
                proc = subprocess.run([cc, *_CFLAGS, str(src), "-o", str(out), "-lm"],
                                      capture_output=True, text=True, timeout=300)
                if proc.returncode != 0:
                    raise FastPathUnavailable(f"compiling the fast decode kernel failed: {proc.stderr[-2000:]}")
                os.replace(out, target)
        # torch is imported, so its libgomp (same soname) is the one the kernel binds to.
        lib = ctypes.CDLL(str(target))
        lib.fl_forward.restype = ctypes.c_int
        lib.fl_forward.argtypes = [ctypes.POINTER(_Model), ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
        lib.fl_forward_batch.restype = ctypes.c_int
        lib.fl_forward_batch.argtypes = [ctypes.POINTER(_Model), ctypes.c_void_p, ctypes.c_int,
                                         ctypes.c_int, ctypes.c_void_p]
        lib.fl_batch_scratch.restype = ctypes.c_long
        lib.fl_batch_scratch.argtypes = [ctypes.POINTER(_Model), ctypes.c_int, ctypes.c_int]
        lib.fl_exp.restype = None
        lib.fl_exp.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
        lib.fl_abi_version.restype = ctypes.c_int
        if lib.fl_abi_version() != _ABI_VERSION:
            raise FastPathUnavailable("stale fast decode kernel")
        _lib = lib
        return lib


# ---------------------------------------------------------------------------------------------
# Weights: the GGUF's blocks where they reproduce the eager weights exactly, else fp32


def _reverse_permute(rows, n_head: int, n_kv: int | None = None):
    """transformers' GGUF q/k row permutation (llama.cpp interleaves rotary halves)."""
    if n_kv is not None and n_head != n_kv:
        n_head = n_kv
    dim = rows.shape[0] // n_head // 2
    w = rows.reshape(n_head, dim, 2, *rows.shape[1:])
    return w.swapaxes(2, 1).reshape(rows.shape)


_GGUF_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def gguf_packed_weights(model, gguf_path: str | os.PathLike, *, verify: bool = True) -> dict[str, tuple[int, torch.Tensor]]:
    """{hf weight name: (type, uint8 blocks [N, K/32*block])} for tensors that match exactly."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFReader

    cfg = model.config
    kinds = {GGMLQuantizationType.Q4_1: T_Q4_1, GGMLQuantizationType.Q8_0: T_Q8_0}
    reader = GGUFReader(str(gguf_path))
    out: dict[str, tuple[int, torch.Tensor]] = {}
    for t in reader.tensors:
        kind = kinds.get(t.tensor_type)
        if kind is None:
            continue
        if t.name == "token_embd.weight":
            names = ["lm_head.weight"] if getattr(cfg, "tie_word_embeddings", False) else []
        elif t.name == "output.weight":
            names = ["lm_head.weight"]
        elif t.name.startswith("blk."):
            _, idx, part, _w = t.name.split(".")
            if part not in _GGUF_NAMES:
                continue
            names = [f"model.layers.{idx}.{_GGUF_NAMES[part]}.weight"]
        else:
            continue
        blocks = np.asarray(t.data)
        if part_is(t.name, "attn_q"):
            blocks = _reverse_permute(blocks, cfg.num_attention_heads, cfg.num_attention_heads)
        elif part_is(t.name, "attn_k"):
            blocks = _reverse_permute(blocks, cfg.num_attention_heads, cfg.num_key_value_heads)
        blocks = np.ascontiguousarray(blocks)
        for name in names:
            ref = _weight(model, name)
            if ref is None or ref.dtype != torch.float32 or ref.dim() != 2 or ref.shape[1] % 32:
                continue
            if blocks.shape != (ref.shape[0], ref.shape[1] // 32 * _BLOCK_BYTES[kind]):
                continue
            packed = torch.from_numpy(blocks.copy())
            if verify and not torch.equal(dequantize_blocks(kind, packed, ref.shape[1]), ref.detach()):
                log.info("fast path: %s does not match its GGUF blocks; using fp32", name)
                continue
            out[name] = (kind, packed)
    return out


def dequantize_blocks(kind: int, blocks: torch.Tensor, K: int) -> torch.Tensor:
    """fp32 weights [N, K] from GGUF blocks, computed as gguf/llama.cpp do (d*q + m, d*q)."""
    N = blocks.shape[0]
    b = blocks.view(N, K // 32, _BLOCK_BYTES[kind])
    d = b[..., 0:2].contiguous().view(torch.float16).float()  # [N, nb, 1]
    if kind == T_Q4_1:
        m = b[..., 2:4].contiguous().view(torch.float16).float()
        qs = b[..., 4:20]
        q = torch.cat([qs & 0x0F, qs >> 4], dim=-1).float()  # [N, nb, 32]
        return (d * q + m).reshape(N, K)
    q = b[..., 2:34].contiguous().view(torch.int8).float()
    return (d * q).reshape(N, K)


def repack_blocks(kind: int, blocks: torch.Tensor, K: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The kernel's layout of GGUF blocks (see the C source): rows padded to a multiple of 4 and
    grouped by 4, the group's blocks interleaved. Returns (quants uint8 [groups, nb, 4, 16|32],
    d fp32 [groups, nb, 4], m fp32 [groups, nb, 4] for Q4_1 else None). The fp16 scales widen
    exactly, so these are the same weights."""
    N, nb = blocks.shape[0], K // 32
    b = blocks.view(N, nb, _BLOCK_BYTES[kind])
    pad = -N % 4
    if pad:
        b = torch.cat([b, torch.zeros(pad, nb, b.shape[-1], dtype=b.dtype)])
    groups = b.shape[0] // 4

    def grouped(t: torch.Tensor) -> torch.Tensor:  # [4*groups, nb, ...] -> [groups, nb, 4, ...]
        return t.reshape(groups, 4, nb, *t.shape[2:]).transpose(1, 2).contiguous()

    d = grouped(b[..., 0:2].contiguous().view(torch.float16).float().reshape(-1, nb))
    if kind == T_Q4_1:
        m = grouped(b[..., 2:4].contiguous().view(torch.float16).float().reshape(-1, nb))
        return grouped(b[..., 4:20]), d, m
    return grouped(b[..., 2:34]), d, None


def dequantize_repacked(kind: int, quants: torch.Tensor, d: torch.Tensor, m: torch.Tensor | None,
                        N: int) -> torch.Tensor:
    """fp32 weights [N, K] from the kernel's layout (:func:`repack_blocks`), computed as the
    kernel's dequant_row does (d*q + m, d*q)."""
    def rows(t: torch.Tensor) -> torch.Tensor:  # [groups, nb, 4, ...] -> [N, nb, ...]
        return t.transpose(1, 2).reshape(-1, t.shape[1], *t.shape[3:])[:N]

    dd = rows(d)[..., None]
    if kind == T_Q4_1:
        qs = rows(quants)
        q = torch.cat([qs & 0x0F, qs >> 4], dim=-1).float()
        return (dd * q + rows(m)[..., None]).reshape(N, -1)
    return (dd * rows(quants).view(torch.int8).float()).reshape(N, -1)


def cached_packed_weights(model, gguf_path, cache_dir=None) -> dict[str, tuple[int, torch.Tensor]]:
    """:func:`gguf_packed_weights`, with the blocks kept on disk after the first (slow) read.

    Reading the GGUF takes seconds (its tokenizer metadata); the cached blocks load in a blink
    and are verified against the eager weights every time.
    """
    from safetensors.torch import load_file, save_file

    gguf_path = Path(gguf_path)
    st = gguf_path.stat()
    folder = Path(cache_dir) / "kernels" if cache_dir else _kernel_dir()
    target = folder / f"packed-{gguf_path.stem}-{st.st_size}.safetensors"
    if target.is_file():
        try:
            from safetensors import safe_open

            with safe_open(str(target), "pt") as f:
                kinds = {k: int(v) for k, v in (f.metadata() or {}).items()}
            tensors = load_file(str(target))
            out = {}
            for name, blocks in tensors.items():
                ref = _weight(model, name)
                kind = kinds.get(name)
                if ref is None or kind not in _BLOCK_BYTES or ref.dtype != torch.float32:
                    continue
                if blocks.shape != (ref.shape[0], ref.shape[1] // 32 * _BLOCK_BYTES[kind]):
                    continue
                if torch.equal(dequantize_blocks(kind, blocks, ref.shape[1]), ref.detach()):
                    out[name] = (kind, blocks)
            if out:
                return out
        except Exception:  # noqa: BLE001 - a broken cache file is rebuilt
            log.debug("fast path: unreadable packed-weights cache %s", target, exc_info=True)
    out = gguf_packed_weights(model, gguf_path)
    if out:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
            os.close(fd)
            save_file({k: v for k, (_kind, v) in out.items()}, tmp,
                      metadata={k: str(kind) for k, (kind, _v) in out.items()})
            os.replace(tmp, target)
        except OSError:
            log.debug("fast path: could not cache packed weights", exc_info=True)
    return out


def part_is(gguf_name: str, part: str) -> bool:
    return gguf_name.startswith("blk.") and gguf_name.split(".")[2] == part


def _weight(model, name: str):
    if name == "lm_head.weight":
        head = model.get_output_embeddings()
        return head.weight if head is not None else None
    return dict(model.named_parameters()).get(name)


# ---------------------------------------------------------------------------------------------
# The decoder


def check_model_supported(model) -> None:
    cfg = model.config
    if getattr(cfg, "model_type", None) != "llama":
        raise FastPathUnavailable(f"fast decode supports Llama models, not {getattr(cfg, 'model_type', '?')!r}")
    if getattr(cfg, "attention_bias", False) or getattr(cfg, "mlp_bias", False):
        raise FastPathUnavailable("fast decode does not support biases")
    if getattr(cfg, "hidden_act", "silu") != "silu":
        raise FastPathUnavailable("fast decode supports SiLU MLPs only")
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    if head_dim % 8 or head_dim > 64 or cfg.hidden_size % 32 or cfg.intermediate_size % 32:
        raise FastPathUnavailable("fast decode: unsupported shapes")
    if max(cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads * head_dim) > 8192:
        raise FastPathUnavailable("fast decode: model too wide")
    if getattr(cfg, "sliding_window", None):
        raise FastPathUnavailable("fast decode does not support sliding windows")
    if getattr(model, "hf_device_map", None) and len(set(map(str, model.hf_device_map.values()))) > 1:
        raise FastPathUnavailable("fast decode does not support dispatched models")
    for p in model.parameters():
        if p.device.type != "cpu" or p.dtype != torch.float32:
            raise FastPathUnavailable("fast decode needs an fp32 model on the CPU")
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "rotary_emb") or not hasattr(inner, "layers"):
        raise FastPathUnavailable("fast decode: not a LlamaForCausalLM layout")


class FastDecoder:
    """Everything the C kernel needs about one model: pointers, packed weights, rope tables."""

    def __init__(self, model, *, packed: dict[str, tuple[int, torch.Tensor]] | None = None,
                 n_threads: int | None = None, max_positions: int | None = None,
                 cache_dir: str | os.PathLike | None = None) -> None:
        check_model_supported(model)
        self.lib = load_kernel(cache_dir)
        self.model = model
        cfg = model.config
        self.n_layers = cfg.num_hidden_layers
        self.dim = cfg.hidden_size
        self.hidden = cfg.intermediate_size
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or self.dim // self.n_heads
        self.vocab = model.get_output_embeddings().weight.shape[0]
        # One thread by default: on a shared 2-core machine a second spinning thread is 5-10x
        # slower whenever another process holds a core (measured), and one thread already beats
        # the eager path 3-4x.
        self.n_threads = n_threads or DEFAULT_THREADS
        self.max_positions = int(max_positions or getattr(cfg, "max_position_embeddings", 4096) or 4096)
        packed = packed or {}
        self.packed_types = {name: kind for name, (kind, _b) in packed.items()}
        # {name: (kind, quants, d, m)}: the kernel's layout; the GGUF blocks are not kept.
        self.packed: dict[str, tuple[int, torch.Tensor, torch.Tensor, torch.Tensor | None]] = {}
        self.keep: list[Any] = []  # tensors whose pointers the C side holds
        self.packed_bytes = 0

        inner = model.model
        embed = inner.embed_tokens.weight.detach()
        self.keep.append(embed)
        with torch.inference_mode():
            pos = torch.arange(self.max_positions)[None]
            cos, sin = inner.rotary_emb(embed[:1, None, :1].float(), pos)
        self.cos = cos[0].float().contiguous()
        self.sin = sin[0].float().contiguous()
        self.keep += [self.cos, self.sin]
        attn = inner.layers[0].self_attn
        scale = float(getattr(attn, "scaling", self.head_dim ** -0.5))

        self.layers = (_Layer * self.n_layers)()
        for i, layer in enumerate(inner.layers):
            L = self.layers[i]
            L.attn_norm = self._ptr(layer.input_layernorm.weight)
            L.ffn_norm = self._ptr(layer.post_attention_layernorm.weight)
            prefix = f"model.layers.{i}."
            for field, mod in (("q", layer.self_attn.q_proj), ("k", layer.self_attn.k_proj),
                               ("v", layer.self_attn.v_proj), ("o", layer.self_attn.o_proj),
                               ("gate", layer.mlp.gate_proj), ("up", layer.mlp.up_proj),
                               ("down", layer.mlp.down_proj)):
                name = prefix + {"q": "self_attn.q_proj", "k": "self_attn.k_proj",
                                 "v": "self_attn.v_proj", "o": "self_attn.o_proj",
                                 "gate": "mlp.gate_proj", "up": "mlp.up_proj",
                                 "down": "mlp.down_proj"}[field] + ".weight"
                setattr(L, field, self._wt(name, mod.weight, packed))
        head = model.get_output_embeddings().weight
        self.model_struct = _Model(
            n_layers=self.n_layers, dim=self.dim, hidden=self.hidden, n_heads=self.n_heads,
            n_kv=self.n_kv, head_dim=self.head_dim, vocab=self.vocab, n_threads=self.n_threads,
            eps=float(cfg.rms_norm_eps), attn_scale=scale,
            embed=embed.data_ptr(), out_norm=self._ptr(inner.norm.weight),
            lm_head=self._wt("lm_head.weight", head, packed),
            cos_t=self.cos.data_ptr(), sin_t=self.sin.data_ptr(),
            lenA=0, capB=0, max_pos=self.max_positions, layers=self.layers, scratch=None,
        )
        self._busy = threading.Lock()

    def _ptr(self, t: torch.Tensor) -> int:
        t = t.detach()
        if not t.is_contiguous() or t.dtype != torch.float32:
            t = t.float().contiguous()
        self.keep.append(t)
        return t.data_ptr()

    def _wt(self, name: str, weight: torch.Tensor, packed: dict) -> _Wt:
        N, K = weight.shape
        if name in packed:
            kind, blocks = packed[name]
            quants, d, m = repack_blocks(kind, blocks, K)
            self.packed[name] = (kind, quants, d, m)
            self.packed_bytes += quants.numel() + 4 * d.numel() + (4 * m.numel() if m is not None else 0)
            return _Wt(data=quants.data_ptr(), d=d.data_ptr(), m=m.data_ptr() if m is not None else None,
                       type=kind, N=N, K=K)
        return _Wt(data=self._ptr(weight), d=None, m=None, type=T_F32, N=N, K=K)

    @property
    def description(self) -> str:
        kinds = list(self.packed_types.values())
        return (f"C decode, {self.n_threads} thread(s), {kinds.count(T_Q4_1)} Q4_1 + "
                f"{kinds.count(T_Q8_0)} Q8_0 packed tensors")

    def session(self, cache, *, max_new: int) -> "FastSession":
        return FastSession(self, cache, max_new=max_new)


def _bucket(n: int) -> int:
    size = 64
    while size < n:
        size *= 2
    return size


class FastSession:
    """One generation: reads the DynamicCache's KV in place, decodes new tokens into its own
    buffer, and on ``close()`` appends them to the DynamicCache (so PrefixCache keeps working)."""

    def __init__(self, decoder: FastDecoder, cache, *, max_new: int) -> None:
        self.decoder = d = decoder
        self.cache = cache
        layers = getattr(cache, "layers", None)
        if layers is None or len(layers) < d.n_layers:
            raise FastPathUnavailable("fast decode needs a DynamicCache with one layer per block")
        self.lenA = int(cache.get_seq_length())
        self.capB = _bucket(max_new + 1)
        if self.lenA + self.capB > d.max_positions:
            self.capB = max(1, d.max_positions - self.lenA)
        self.n = 0
        self.closed = False
        self._a: list[torch.Tensor] = []
        empty = torch.zeros(d.n_kv, 1, d.head_dim)
        kv = torch.empty(d.n_layers, 2, d.n_kv, self.capB, d.head_dim)
        self.kvB = kv
        self.logits = torch.empty(d.vocab)
        scratch = 4 * d.dim + 4 * d.n_heads * d.head_dim + 2 * d.n_kv * d.head_dim + d.hidden \
            + d.n_heads * (self.lenA + self.capB) + 64
        self.scratch = torch.empty(scratch)
        self.layers = (_Layer * d.n_layers)()
        for i in range(d.n_layers):
            ctypes.memmove(ctypes.byref(self.layers[i]), ctypes.byref(d.layers[i]), ctypes.sizeof(_Layer))
            L = self.layers[i]
            if self.lenA:
                k, v = layers[i].keys, layers[i].values
                if k.shape[0] != 1 or k.dtype != torch.float32 or k.shape[-2] != self.lenA:
                    raise FastPathUnavailable("fast decode: unexpected KV cache layout")
                k, v = self._head_major(k[0]), self._head_major(v[0])
                stride = k.stride(0)
                if v.stride(0) != stride:
                    v = v.contiguous()
                    k = k.contiguous()
                    stride = k.stride(0)
            else:
                k = v = empty
                stride = 0
            self._a += [k, v]
            L.kA, L.vA, L.strideA = k.data_ptr(), v.data_ptr(), stride
            L.kB, L.vB = kv[i, 0].data_ptr(), kv[i, 1].data_ptr()
        self.struct = _Model()
        ctypes.memmove(ctypes.byref(self.struct), ctypes.byref(d.model_struct), ctypes.sizeof(_Model))
        self.struct.lenA, self.struct.capB = self.lenA, self.capB
        self.struct.layers = self.layers
        self.struct.scratch = self.scratch.data_ptr()
        self._ref = ctypes.byref(self.struct)
        self._fwd = d.lib.fl_forward
        self._logits_ptr = self.logits.data_ptr()

    @staticmethod
    def _head_major(t: torch.Tensor) -> torch.Tensor:
        """[n_kv, S, hd] with unit stride along hd and S (any stride between heads)."""
        if t.stride(-1) != 1 or t.stride(-2) != t.shape[-1]:
            t = t.contiguous()
        return t

    @property
    def position(self) -> int:
        return self.lenA + self.n

    @property
    def room(self) -> int:
        return self.capB - self.n

    def step(self, token: int, *, want_logits: bool = True) -> torch.Tensor | None:
        """Run ``token`` at the next position; return the logits [V] (a buffer reused next step)."""
        if self.n >= self.capB:
            raise FastPathUnavailable("fast decode session is full")
        rc = self._fwd(self._ref, token, self.lenA + self.n, self._logits_ptr if want_logits else None)
        if rc != 0:
            raise FastPathUnavailable(f"fast decode kernel refused token {token} at {self.position}")
        self.n += 1
        return self.logits if want_logits else None

    def prefill(self, tokens, *, want_logits: bool = True) -> torch.Tensor | None:
        """Run prompt ``tokens`` at the next positions in one batched kernel call (each weight
        block decoded once for all of them); return the last token's logits [V] (reused buffer)."""
        tokens = [int(t) for t in tokens]
        n = len(tokens)
        if not n:
            raise ValueError("prefill needs at least one token")
        if n > self.room:
            raise FastPathUnavailable("fast decode session is full")
        if n == 1:  # one token: the decode step is faster (fused dequantize-and-dot)
            return self.step(tokens[0], want_logits=want_logits)
        lib = self.decoder.lib
        need = int(lib.fl_batch_scratch(self._ref, n, self.position))
        if need > self.scratch.numel():
            self.scratch = torch.empty(need)
            self.struct.scratch = self.scratch.data_ptr()
        ids = (ctypes.c_int * n)(*tokens)
        rc = lib.fl_forward_batch(self._ref, ids, n, self.position,
                                  self._logits_ptr if want_logits else None)
        if rc != 0:
            raise FastPathUnavailable(f"fast decode kernel refused a {n}-token batch at {self.position}")
        self.n += n
        return self.logits if want_logits else None

    def close(self) -> None:
        """Append the KV of the decoded tokens to the DynamicCache (idempotent)."""
        if self.closed:
            return
        self.closed = True
        if not self.n:
            return
        n = self.n
        for i, layer in enumerate(self.cache.layers[: self.decoder.n_layers]):
            k_new = self.kvB[i, 0, :, :n][None]
            v_new = self.kvB[i, 1, :, :n][None]
            if self.lenA:
                layer.keys = _append_kv(layer, "keys", k_new)
                layer.values = _append_kv(layer, "values", v_new)
            else:
                layer.keys = _append_kv(layer, "keys", k_new, fresh=True)
                layer.values = _append_kv(layer, "values", v_new, fresh=True)
                layer.dtype, layer.device = k_new.dtype, k_new.device
                layer.is_initialized = True


def _append_kv(layer, name: str, new: torch.Tensor, *, fresh: bool = False) -> torch.Tensor:
    """``layer.<name>`` with ``new`` [1, H, n, D] appended along the sequence, as a view of a
    buffer with spare room kept on the layer: appending in place instead of torch.cat saves
    copying the whole prompt's KV after every request (1,500 tokens: 69 MB, tens of ms). A
    cropped cache (a view of the same buffer) is appended to in place too; a tensor from
    elsewhere (the eager path's torch.cat) moves to a new buffer."""
    old = None if fresh else getattr(layer, name)
    length = 0 if old is None else old.shape[-2]
    need = length + new.shape[-2]
    buf = getattr(layer, f"_fast_{name}", None)
    if (old is None or buf is None or old.data_ptr() != buf.data_ptr() or old.stride() != buf.stride()
            or buf.shape[:2] != new.shape[:2] or buf.shape[-1] != new.shape[-1] or need > buf.shape[-2]):
        cap = need + max(256, need // 4)
        buf = torch.empty(*new.shape[:2], cap, new.shape[-1], dtype=new.dtype)
        if length:
            buf[:, :, :length] = old
        setattr(layer, f"_fast_{name}", buf)
    buf[:, :, length:need] = new
    return buf[:, :, :need]


def prepare_fast_decoder(model, *, gguf_path: str | os.PathLike | None = None,
                         n_threads: int | None = None, verify: bool = True,
                         cache_dir: str | os.PathLike | None = None) -> FastDecoder:
    """Build a :class:`FastDecoder` (compile the kernel if needed, pack the GGUF's weights)."""
    check_model_supported(model)
    load_kernel(cache_dir)
    packed = {}
    if gguf_path is not None:
        try:
            packed = (cached_packed_weights(model, gguf_path, cache_dir) if verify
                      else gguf_packed_weights(model, gguf_path, verify=False))
        except Exception as exc:  # noqa: BLE001 - fp32 weights still work
            log.warning("fast path: could not read packed weights from %s: %s", gguf_path, exc)
    return FastDecoder(model, packed=packed, n_threads=n_threads, cache_dir=cache_dir)


_preparing: "weakref.WeakSet[BackgroundFastPath]" = weakref.WeakSet()


@atexit.register
def _wait_for_preparations() -> None:
    """At interpreter exit, let running preparations finish (a few seconds at most): a thread
    killed inside torch while the interpreter finalizes aborts the process ("terminate called
    without an active exception", exit status 134)."""
    for path in list(_preparing):
        path._thread.join(timeout=60)


class BackgroundFastPath:
    """Prepares a FastDecoder in a background thread; ``decoder`` is None until it is ready.

    A request never waits for it: until ready (or when preparation failed) generation uses the
    eager path. ``state`` is 'pending', 'ready', 'failed' or 'off'; ``reason`` says why not ready.
    """

    def __init__(self, model, *, gguf_path=None, n_threads=None, cache_dir=None, start: bool = True) -> None:
        self.decoder: FastDecoder | None = None
        self.state = "pending"
        self.reason = ""
        self.seconds = 0.0
        self._done = threading.Event()
        self._args = dict(gguf_path=gguf_path, n_threads=n_threads, cache_dir=cache_dir)
        self._model = model
        self._thread = threading.Thread(target=self._run, name="codellama-fast-path", daemon=True)
        if start:
            _preparing.add(self)
            self._thread.start()

    def _run(self) -> None:
        t = time.perf_counter()
        try:
            # Low priority for the preparation: a request may be running on the model thread.
            self.decoder = prepare_fast_decoder(self._model, **self._args)
            self.state = "ready"
            log.info("fast decode ready (%s) in %.1f s", self.decoder.description, time.perf_counter() - t)
        except FastPathUnavailable as exc:
            self.state, self.reason = "failed", str(exc)
            log.info("fast decode unavailable: %s", exc)
        except Exception as exc:  # noqa: BLE001 - the eager path always remains
            self.state, self.reason = "failed", f"{type(exc).__name__}: {exc}"
            log.warning("fast decode preparation failed", exc_info=True)
        finally:
            self.seconds = time.perf_counter() - t
            self._model = None
            self._done.set()

    def wait(self, timeout: float | None = None) -> FastDecoder | None:
        self._done.wait(timeout)
        return self.decoder

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state}
        if self.decoder is not None:
            out["kind"] = self.decoder.description
        if self.reason:
            out["reason"] = self.reason
        return out


# ---------------------------------------------------------------------------------------------
# What generate_stream uses

FAST_PREFILL_MAX = 16
"""A prompt tail (after a reused prefix) of at most this many tokens runs through the kernel in one
batched call (``fl_forward_batch``: each weight row decoded once for all the tokens); longer ones
are prefilled by torch. Measured on the 2-core AVX2 box, SmolLM2-135M, 1 thread, 1,500 cached
tokens: kernel vs torch 33 vs 84 ms (1 token), 75 vs 201 (6), 185 vs 232 (16), 300 vs 281 (32) —
the kernel's attention is per query, so torch's batched attention wins past ≈16-24 tokens at
that context length (with a short context the kernel stays ahead up to 32+)."""


class FastRun:
    """The fast path for one generate_stream call; never raises out of step()/close()."""

    def __init__(self, decoder: FastDecoder, cache, *, n_cached: int, n_prompt: int, max_new: int) -> None:
        self.decoder = decoder
        self.cache = cache
        self.max_new = max_new
        rest = n_prompt - n_cached
        self.prefill_in_kernel = n_cached > 0 and 1 <= rest <= FAST_PREFILL_MAX
        self.session: FastSession | None = None
        self.failed = False

    def _open(self, extra: int) -> bool:
        try:
            self.session = self.decoder.session(self.cache, max_new=self.max_new + extra)
            return True
        except Exception as exc:  # noqa: BLE001 - the eager path goes on
            log.info("fast decode not used for this request: %s", exc)
            self.failed = True
            return False

    def prefill(self, tokens) -> torch.Tensor:
        """Run a short prompt tail through the kernel in one batched call; the last token's
        logits (the session's buffer, valid until the next step)."""
        from .generation import prefill as eager_prefill

        tokens = list(tokens)
        if self._open(len(tokens)):
            try:
                return self.session.prefill(tokens)
            except Exception as exc:  # noqa: BLE001 - refused before writing any KV: go on eagerly
                log.info("fast prefill not used for this request: %s", exc)
                self.close()
                self.failed = True
        return eager_prefill(self.decoder.model, tokens, self.cache, chunk=max(1, len(tokens)),
                             should_stop=lambda: False)

    def begin(self) -> None:
        """After a torch prefill: decode from here on in the kernel."""
        self._open(0)

    def step(self, token: int) -> torch.Tensor | None:
        if self.session is None:
            return None
        try:
            return self.session.step(token)
        except Exception as exc:  # noqa: BLE001
            log.info("fast decode stopped, going on eagerly: %s", exc)
            self.close()
            return None

    def close(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            session.close()


def start_session(decoder, cache, *, n_cached: int, n_prompt: int, max_new: int) -> FastRun | None:
    if decoder is None:
        return None
    try:
        return FastRun(decoder, cache, n_cached=n_cached, n_prompt=n_prompt, max_new=max_new)
    except Exception:  # noqa: BLE001
        log.debug("fast decode unavailable for this request", exc_info=True)
        return None
