/* The K-quants' int8 kernels (see quants.h). None yet: Q4_K, Q5_K and Q6_K run their fp32
   kernels on the rounded activations x~. */
#include "quants.h"

int jcl_kq_q8_supported(int type) { (void)type; return 0; }

void jcl_kq_q8_group4(const Wt* w, int g, const XQ* x, int n, float* out) {
  (void)w; (void)g; (void)x;
  for (int k = 0; k < 4 * n; k++) out[k] = 0.f;
}
