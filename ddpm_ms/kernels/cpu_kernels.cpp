// CPU kernels for ddpm_ms, loaded as MindSpore ops.Custom(func_type="aot"); see __init__.py.
// Each entry point has the AOT signature (nparam, params, ndims, shapes, dtypes, stream, extra);
// params holds the inputs then the outputs, all float32, contiguous, row-major.
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <unordered_map>
#include <vector>
#include <omp.h>
#include <algorithm>
#include <cmath>

#include <cstdlib>
// Threads per kernel: DDPM_MS_KERNEL_THREADS, else 2.
static int kThreads() {
  static int n = [] { const char *e = std::getenv("DDPM_MS_KERNEL_THREADS"); int v = e ? std::atoi(e) : 2; return v > 0 ? v : 2; }();
  return n;
}

// exp(x) to 1e-7 relative error (Cephes' degree-6 polynomial after reducing x by a multiple of
// ln 2), written so that the compiler vectorises the loops that call it: std::exp is a library
// call per element, ten times slower. Arguments are clamped to [-87, 88] (exp(-1000) gives 1.6e-38,
// not 0); NaN stays NaN.
static inline float fast_exp(float x) {
  x = x < -87.f ? -87.f : x;  // ternaries, not std::min/max, which return references and branch
  x = x > 88.f ? 88.f : x;
  const float n = std::nearbyint(x * 1.44269504088896341f);  // std::floor would not vectorise
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  const int32_t bits = ((int32_t)n + 127) << 23;  // 2^n
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

extern "C" int dnnl_sgemm(char transa, char transb, int64_t M, int64_t N, int64_t K, float alpha,
                          const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                          float *C, int64_t ldc);

// ---------------------------------------------------------------------------------------------
// bfloat16 matrix products, for the "_bf16" entry points: operands rounded to bfloat16, products
// accumulated in float32 by oneDNN's matmul primitive from the same libdnnl.so.3 (the library's
// BLAS-style API has sgemm only). Declared here from oneDNN 3.x's C API (dnnl.h, dnnl_types.h:
// stable since 3.0; MindSpore 2.10 ships 3.10), since MindSpore ships the library without headers.
extern "C" {
typedef struct dnnl_engine *dnnl_engine_t;
typedef struct dnnl_stream *dnnl_stream_t;
typedef struct dnnl_memory_desc *dnnl_memory_desc_t;
typedef struct dnnl_primitive_desc *dnnl_primitive_desc_t;
typedef struct dnnl_primitive *dnnl_primitive_t;
typedef struct dnnl_memory *dnnl_memory_t;
typedef struct dnnl_primitive_attr *dnnl_primitive_attr_t;
typedef struct dnnl_post_ops *dnnl_post_ops_t;
typedef int64_t dnnl_dims_t[12];
typedef struct { int arg; dnnl_memory_t memory; } dnnl_exec_arg_t;
int dnnl_engine_create(dnnl_engine_t *engine, int kind, size_t index);
int dnnl_stream_create(dnnl_stream_t *stream, dnnl_engine_t engine, unsigned flags);
int dnnl_memory_desc_create_with_strides(dnnl_memory_desc_t *md, int ndims, const dnnl_dims_t dims, int data_type,
                                         const dnnl_dims_t strides);
int dnnl_memory_desc_destroy(dnnl_memory_desc_t md);
int dnnl_primitive_attr_create(dnnl_primitive_attr_t *attr);
int dnnl_primitive_attr_destroy(dnnl_primitive_attr_t attr);
int dnnl_post_ops_create(dnnl_post_ops_t *post_ops);
int dnnl_post_ops_destroy(dnnl_post_ops_t post_ops);
int dnnl_post_ops_append_sum(dnnl_post_ops_t post_ops, float scale, int32_t zero_point, int data_type);
int dnnl_primitive_attr_set_post_ops(dnnl_primitive_attr_t attr, dnnl_post_ops_t post_ops);
int dnnl_matmul_primitive_desc_create(dnnl_primitive_desc_t *pd, dnnl_engine_t engine, dnnl_memory_desc_t src,
                                      dnnl_memory_desc_t weights, dnnl_memory_desc_t bias, dnnl_memory_desc_t dst,
                                      dnnl_primitive_attr_t attr);
int dnnl_primitive_desc_destroy(dnnl_primitive_desc_t pd);
int dnnl_primitive_create(dnnl_primitive_t *primitive, dnnl_primitive_desc_t pd);
int dnnl_memory_create(dnnl_memory_t *memory, dnnl_memory_desc_t md, dnnl_engine_t engine, void *handle);
int dnnl_memory_set_data_handle(dnnl_memory_t memory, void *handle);
int dnnl_primitive_execute(dnnl_primitive_t primitive, dnnl_stream_t stream, int nargs, const dnnl_exec_arg_t *args);
int dnnl_memory_desc_create_with_tag(dnnl_memory_desc_t *md, int ndims, const dnnl_dims_t dims, int data_type, int tag);
int dnnl_convolution_forward_primitive_desc_create(dnnl_primitive_desc_t *pd, dnnl_engine_t engine, int prop_kind,
                                                   int alg_kind, dnnl_memory_desc_t src, dnnl_memory_desc_t weights,
                                                   dnnl_memory_desc_t bias, dnnl_memory_desc_t dst,
                                                   const dnnl_dims_t strides, const dnnl_dims_t dilates,
                                                   const dnnl_dims_t padding_l, const dnnl_dims_t padding_r,
                                                   dnnl_primitive_attr_t attr);
dnnl_memory_desc_t dnnl_primitive_desc_query_md(dnnl_primitive_desc_t pd, int what, int index);
int dnnl_reorder_primitive_desc_create(dnnl_primitive_desc_t *pd, dnnl_memory_desc_t src, dnnl_engine_t src_engine,
                                       dnnl_memory_desc_t dst, dnnl_engine_t dst_engine, dnnl_primitive_attr_t attr);
size_t dnnl_memory_desc_get_size(dnnl_memory_desc_t md);
int dnnl_convolution_backward_data_primitive_desc_create(dnnl_primitive_desc_t *pd, dnnl_engine_t engine, int alg_kind,
                                                         dnnl_memory_desc_t diff_src, dnnl_memory_desc_t weights,
                                                         dnnl_memory_desc_t diff_dst, const dnnl_dims_t strides,
                                                         const dnnl_dims_t dilates, const dnnl_dims_t padding_l,
                                                         const dnnl_dims_t padding_r, dnnl_primitive_desc_t hint,
                                                         dnnl_primitive_attr_t attr);
int dnnl_convolution_backward_weights_primitive_desc_create(dnnl_primitive_desc_t *pd, dnnl_engine_t engine, int alg_kind,
                                                            dnnl_memory_desc_t src, dnnl_memory_desc_t diff_weights,
                                                            dnnl_memory_desc_t diff_bias, dnnl_memory_desc_t diff_dst,
                                                            const dnnl_dims_t strides, const dnnl_dims_t dilates,
                                                            const dnnl_dims_t padding_l, const dnnl_dims_t padding_r,
                                                            dnnl_primitive_desc_t hint, dnnl_primitive_attr_t attr);
}
enum { kDnnlCpu = 1, kDnnlInOrder = 1, kDnnlBf16 = 2, kDnnlF32 = 3, kArgSrc = 1, kArgDst = 17, kArgWeights = 33,
       kArgBias = 41, kTagAny = 1, kTagA = 2, kTagAbcd = 5, kForwardTraining = 64, kConvDirect = 1,
       kQuerySrcMd = 129, kQueryDiffSrcMd = 130, kQueryWeightsMd = 131, kQueryDiffWeightsMd = 132,
       kQueryDstMd = 133, kQueryDiffDstMd = 134, kArgDiffSrc = 129, kArgDiffDst = 145, kArgDiffWeights = 161,
       kArgDiffBias = 169 };

typedef uint16_t bf16_t;

// Round to nearest even; NaN stays NaN. Branch-free, so conversion loops vectorise.
static inline bf16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return (bf16_t)((u & 0x7fffffffu) > 0x7f800000u ? (u >> 16) | 0x40u : rounded);
}

// rows x cols of src (row stride ld) times alpha into a contiguous bfloat16 matrix
static void to_bf16_rows(const float *src, int64_t rows, int64_t cols, int64_t ld, bf16_t *dst, float alpha = 1.f) {
  for (int64_t i = 0; i < rows; ++i) {
    const float *s = src + i * ld; bf16_t *d = dst + i * cols;
#pragma omp simd
    for (int64_t j = 0; j < cols; ++j) d[j] = to_bf16(s[j] * alpha);
  }
}

struct MatmulKey {
  int64_t m, n, k, lda, ldb, ldc;
  char ta, tb;
  bool acc;
  bool operator==(const MatmulKey &o) const {
    return m == o.m && n == o.n && k == o.k && lda == o.lda && ldb == o.ldb && ldc == o.ldc && ta == o.ta &&
           tb == o.tb && acc == o.acc;
  }
};
struct MatmulKeyHash {
  size_t operator()(const MatmulKey &key) const {
    size_t h = 1469598103934665603ull;
    for (int64_t v : {key.m, key.n, key.k, key.lda, key.ldb, key.ldc, (int64_t)key.ta, (int64_t)key.tb, (int64_t)key.acc})
      h = (h ^ (size_t)v) * 1099511628211ull;
    return h;
  }
};
struct Matmul { dnnl_primitive_t prim = nullptr; dnnl_memory_t a = nullptr, b = nullptr, c = nullptr; };

static dnnl_engine_t dnnl_cpu_engine() {
  static dnnl_engine_t engine = [] { dnnl_engine_t e = nullptr; dnnl_engine_create(&e, kDnnlCpu, 0); return e; }();
  return engine;
}

// A primitive (and its three memory objects) per shape and thread: creation JIT-compiles a kernel,
// execution then only swaps the data pointers. The stream has no thread pool, so each call runs
// on the calling thread; the kernels parallelise over images or rows themselves, as with sgemm.
static Matmul *matmul_for(const MatmulKey &key) {
  thread_local std::unordered_map<MatmulKey, Matmul, MatmulKeyHash> cache;
  auto it = cache.find(key);
  if (it != cache.end()) return &it->second;
  dnnl_engine_t engine = dnnl_cpu_engine();
  if (!engine) return nullptr;
  dnnl_dims_t ad = {key.m, key.k}, bd = {key.k, key.n}, cd = {key.m, key.n};
  dnnl_dims_t as = {key.ta == 'N' ? key.lda : 1, key.ta == 'N' ? 1 : key.lda};
  dnnl_dims_t bs = {key.tb == 'N' ? key.ldb : 1, key.tb == 'N' ? 1 : key.ldb};
  dnnl_dims_t cs = {key.ldc, 1};
  dnnl_memory_desc_t a = nullptr, b = nullptr, c = nullptr;
  dnnl_primitive_attr_t attr = nullptr;
  dnnl_post_ops_t post = nullptr;
  dnnl_primitive_desc_t pd = nullptr;
  Matmul mm;
  bool ok = dnnl_memory_desc_create_with_strides(&a, 2, ad, kDnnlBf16, as) == 0 &&
            dnnl_memory_desc_create_with_strides(&b, 2, bd, kDnnlBf16, bs) == 0 &&
            dnnl_memory_desc_create_with_strides(&c, 2, cd, kDnnlF32, cs) == 0 &&
            dnnl_primitive_attr_create(&attr) == 0;
  if (ok && key.acc)  // C += A B: a sum post-op adds the product to what C holds
    ok = dnnl_post_ops_create(&post) == 0 && dnnl_post_ops_append_sum(post, 1.f, 0, kDnnlF32) == 0 &&
         dnnl_primitive_attr_set_post_ops(attr, post) == 0;
  ok = ok && dnnl_matmul_primitive_desc_create(&pd, engine, a, b, nullptr, c, attr) == 0 &&
       dnnl_primitive_create(&mm.prim, pd) == 0 && dnnl_memory_create(&mm.a, a, engine, nullptr) == 0 &&
       dnnl_memory_create(&mm.b, b, engine, nullptr) == 0 && dnnl_memory_create(&mm.c, c, engine, nullptr) == 0;
  if (pd) dnnl_primitive_desc_destroy(pd);
  if (post) dnnl_post_ops_destroy(post);
  if (attr) dnnl_primitive_attr_destroy(attr);
  for (dnnl_memory_desc_t md : {a, b, c}) if (md) dnnl_memory_desc_destroy(md);
  if (!ok) return nullptr;
  return &cache.emplace(key, mm).first->second;
}

// One in-order stream per thread; run executes a primitive on it.
static dnnl_stream_t thread_stream() {
  thread_local dnnl_stream_t stream = nullptr;
  if (!stream) dnnl_stream_create(&stream, dnnl_cpu_engine(), kDnnlInOrder);
  return stream;
}

static inline bool run(dnnl_primitive_t prim, std::initializer_list<dnnl_exec_arg_t> args) {
  return dnnl_primitive_execute(prim, thread_stream(), (int)args.size(), args.begin()) == 0;
}

// C (m x n, row stride ldc) = op(A) op(B), or += with acc; op(A) is m x k, stored m x k with row
// stride lda ('N') or k x m ('T'); likewise B. Returns false where oneDNN refused.
static bool matmul_bf16(char ta, char tb, int64_t m, int64_t n, int64_t k, const bf16_t *a, int64_t lda,
                        const bf16_t *b, int64_t ldb, bool acc, float *c, int64_t ldc) {
  if (m <= 0 || n <= 0) return true;
  if (k <= 0) {
    if (!acc) for (int64_t i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + n, 0.f);
    return true;
  }
  Matmul *mm = matmul_for({m, n, k, lda, ldb, ldc, ta, tb, acc});
  if (!mm) return false;
  dnnl_memory_set_data_handle(mm->a, const_cast<bf16_t *>(a));
  dnnl_memory_set_data_handle(mm->b, const_cast<bf16_t *>(b));
  dnnl_memory_set_data_handle(mm->c, c);
  return run(mm->prim, {{kArgSrc, mm->a}, {kArgWeights, mm->b}, {kArgDst, mm->c}});
}

// A 64-byte aligned per-thread scratch buffer (slot 0-2), grown as needed and reused by every shape.
static void *scratch(int slot, size_t bytes) {
  thread_local std::vector<char> buffers[3];
  std::vector<char> &buf = buffers[slot];
  if (buf.size() < bytes + 64) buf.resize(bytes + 64);
  return (void *)(((uintptr_t)buf.data() + 63) & ~(uintptr_t)63);
}

// Forward convolution of a chunk of images by oneDNN's own convolution primitive (its JIT kernels
// want blocked layouts: the plain NCHW input, weight and output are reordered in and out around it,
// through per-thread scratch buffers), well ahead of im2col + sgemm (docs/experiments/speed_round2.md);
// in bfloat16 (BF) it runs oneDNN's bfloat16 kernels. One primitive set per shape and thread.
struct ConvKey {
  int64_t n, c, h, w, o, k, s, p;
  bool bias, bf;
  bool operator==(const ConvKey &x) const {
    return n == x.n && c == x.c && h == x.h && w == x.w && o == x.o && k == x.k && s == x.s && p == x.p &&
           bias == x.bias && bf == x.bf;
  }
};
struct ConvKeyHash {
  size_t operator()(const ConvKey &key) const {
    size_t h = 1469598103934665603ull;
    for (int64_t v : {key.n, key.c, key.h, key.w, key.o, key.k, key.s, key.p, (int64_t)key.bias, (int64_t)key.bf})
      h = (h ^ (size_t)v) * 1099511628211ull;
    return h;
  }
};
static dnnl_primitive_t reorder(dnnl_memory_desc_t from, dnnl_memory_desc_t to) {
  dnnl_primitive_desc_t pd = nullptr;
  dnnl_primitive_t prim = nullptr;
  if (dnnl_reorder_primitive_desc_create(&pd, from, dnnl_cpu_engine(), to, dnnl_cpu_engine(), nullptr) == 0)
    dnnl_primitive_create(&prim, pd);
  if (pd) dnnl_primitive_desc_destroy(pd);
  return prim;
}

// One pass of a convolution as oneDNN primitives: two plain float32 inputs reordered in (a, c), the
// convolution on the blocked copies (ab, cb, rb), its result reordered out to plain float32 (r).
//   forward: a = x,  c = weights, r = y  (+ bias in)
//   data:    a = dy, c = weights, r = dx
//   weights: a = x,  c = dy,      r = dw (+ bias = db)
enum ConvPass { kPassForward = 0, kPassData = 1, kPassWeights = 2 };
struct ConvPrims {
  dnnl_primitive_t conv = nullptr, in1 = nullptr, in2 = nullptr, out = nullptr;
  dnnl_memory_t a = nullptr, ab = nullptr, c = nullptr, cb = nullptr, r = nullptr, rb = nullptr, bias = nullptr;
  size_t ab_bytes = 0, cb_bytes = 0, rb_bytes = 0;
};

static ConvPrims *conv_prims_for(const ConvKey &key, ConvPass pass) {
  thread_local std::unordered_map<ConvKey, ConvPrims, ConvKeyHash> caches[3];
  auto &cache = caches[pass];
  auto it = cache.find(key);
  if (it != cache.end()) return it->second.conv ? &it->second : nullptr;
  ConvPrims &cp = cache[key];  // stays empty (conv == nullptr) if oneDNN refuses: the caller falls back
  dnnl_engine_t e = dnnl_cpu_engine();
  const int64_t ho = (key.h + 2 * key.p - key.k) / key.s + 1, wo = (key.w + 2 * key.p - key.k) / key.s + 1;
  const int dt = key.bf ? kDnnlBf16 : kDnnlF32;
  dnnl_dims_t xd = {key.n, key.c, key.h, key.w}, wd = {key.o, key.c, key.k, key.k}, yd = {key.n, key.o, ho, wo};
  dnnl_dims_t bd = {key.o}, st = {key.s, key.s}, dil = {0, 0}, pad = {key.p, key.p};
  dnnl_memory_desc_t xa = nullptr, wa = nullptr, ya = nullptr, xf = nullptr, wf = nullptr, bm = nullptr;
  dnnl_memory_desc_t xp = nullptr, wp = nullptr, yp = nullptr;
  dnnl_primitive_desc_t fwd = nullptr, bwd = nullptr;
  // The forward pass writes float32 (bfloat16 in, float32 out); the backward passes take its
  // descriptor as their hint, with dy in the compute type.
  bool ok = dnnl_memory_desc_create_with_tag(&xa, 4, xd, dt, kTagAny) == 0 &&
            dnnl_memory_desc_create_with_tag(&wa, 4, wd, dt, kTagAny) == 0 &&
            dnnl_memory_desc_create_with_tag(&ya, 4, yd, pass == kPassForward ? kDnnlF32 : dt, kTagAny) == 0 &&
            dnnl_memory_desc_create_with_tag(&xf, 4, xd, kDnnlF32, kTagAny) == 0 &&
            dnnl_memory_desc_create_with_tag(&wf, 4, wd, kDnnlF32, kTagAny) == 0 &&
            dnnl_memory_desc_create_with_tag(&bm, 1, bd, kDnnlF32, kTagA) == 0 &&
            dnnl_memory_desc_create_with_tag(&xp, 4, xd, kDnnlF32, kTagAbcd) == 0 &&
            dnnl_memory_desc_create_with_tag(&wp, 4, wd, kDnnlF32, kTagAbcd) == 0 &&
            dnnl_memory_desc_create_with_tag(&yp, 4, yd, kDnnlF32, kTagAbcd) == 0 &&
            dnnl_convolution_forward_primitive_desc_create(&fwd, e, kForwardTraining, kConvDirect, xa, wa,
                                                           key.bias ? bm : nullptr, ya, st, dil, pad, pad,
                                                           nullptr) == 0;
  if (ok && pass == kPassData)
    ok = dnnl_convolution_backward_data_primitive_desc_create(&bwd, e, kConvDirect, xf, wa, ya, st, dil, pad, pad, fwd,
                                                              nullptr) == 0;
  if (ok && pass == kPassWeights)
    ok = dnnl_convolution_backward_weights_primitive_desc_create(&bwd, e, kConvDirect, xa, wf, key.bias ? bm : nullptr,
                                                                 ya, st, dil, pad, pad, fwd, nullptr) == 0;
  if (ok) {
    const dnnl_primitive_desc_t pd = pass == kPassForward ? fwd : bwd;
    static const int queries[3][3] = {{kQuerySrcMd, kQueryWeightsMd, kQueryDstMd},
                                      {kQueryDiffDstMd, kQueryWeightsMd, kQueryDiffSrcMd},
                                      {kQuerySrcMd, kQueryDiffDstMd, kQueryDiffWeightsMd}};
    const dnnl_memory_desc_t plain[3][3] = {{xp, wp, yp}, {yp, wp, xp}, {xp, yp, wp}};
    dnnl_memory_desc_t ab = dnnl_primitive_desc_query_md(pd, queries[pass][0], 0);
    dnnl_memory_desc_t cbm = dnnl_primitive_desc_query_md(pd, queries[pass][1], 0);
    dnnl_memory_desc_t rb = dnnl_primitive_desc_query_md(pd, queries[pass][2], 0);
    const dnnl_memory_desc_t ap = plain[pass][0], cpl = plain[pass][1], rp = plain[pass][2];
    cp.ab_bytes = dnnl_memory_desc_get_size(ab);
    cp.cb_bytes = dnnl_memory_desc_get_size(cbm);
    cp.rb_bytes = dnnl_memory_desc_get_size(rb);
    cp.in1 = reorder(ap, ab);
    cp.in2 = reorder(cpl, cbm);
    cp.out = reorder(rb, rp);
    ok = cp.in1 && cp.in2 && cp.out && dnnl_primitive_create(&cp.conv, pd) == 0 &&
         dnnl_memory_create(&cp.a, ap, e, nullptr) == 0 && dnnl_memory_create(&cp.ab, ab, e, nullptr) == 0 &&
         dnnl_memory_create(&cp.c, cpl, e, nullptr) == 0 && dnnl_memory_create(&cp.cb, cbm, e, nullptr) == 0 &&
         dnnl_memory_create(&cp.r, rp, e, nullptr) == 0 && dnnl_memory_create(&cp.rb, rb, e, nullptr) == 0 &&
         dnnl_memory_create(&cp.bias, bm, e, nullptr) == 0;
  }
  if (fwd) dnnl_primitive_desc_destroy(fwd);
  if (bwd) dnnl_primitive_desc_destroy(bwd);
  for (dnnl_memory_desc_t md : {xa, wa, ya, xf, wf, bm, xp, wp, yp}) if (md) dnnl_memory_desc_destroy(md);
  if (!ok) cp.conv = nullptr;
  return ok ? &cp : nullptr;
}

static constexpr int64_t kConvChunk = 8;  // images per primitive call: the blocked copies stay in cache

// y (b, o, ho, wo) = conv(x (b, c, h, w), wt (o, c, k, k)) [+ bias]; false where oneDNN refused.
static bool onednn_conv_fwd(const float *x, const float *wt, const float *bias, float *y, int64_t b, int64_t c,
                            int64_t h, int64_t w, int64_t o, int64_t k, int64_t s, int64_t p, bool bf) {
  const int64_t ho = (h + 2 * p - k) / s + 1, wo = (w + 2 * p - k) / s + 1;
  int failed = 0;
#pragma omp parallel num_threads(kThreads()) reduction(| : failed)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t i0 = b * t / nt, i1 = b * (t + 1) / nt;
    ConvPrims *weights_for = nullptr;  // the primitive whose weight layout the blocked weights hold
    for (int64_t i = i0; i < i1 && !failed; i += kConvChunk) {
      const int64_t n = std::min(kConvChunk, i1 - i);
      ConvPrims *cp = conv_prims_for({n, c, h, w, o, k, s, p, bias != nullptr, bf}, kPassForward);
      if (!cp) { failed = 1; break; }
      dnnl_memory_set_data_handle(cp->cb, scratch(0, cp->cb_bytes));
      dnnl_memory_set_data_handle(cp->ab, scratch(1, cp->ab_bytes));
      dnnl_memory_set_data_handle(cp->rb, scratch(2, cp->rb_bytes));
      if (cp != weights_for) {  // once per call, unless a last, smaller chunk wants another layout
        dnnl_memory_set_data_handle(cp->c, const_cast<float *>(wt));
        failed |= !run(cp->in2, {{kArgSrc, cp->c}, {kArgDst, cp->cb}});
        weights_for = cp;
      }
      dnnl_memory_set_data_handle(cp->a, const_cast<float *>(x + i * c * h * w));
      dnnl_memory_set_data_handle(cp->r, y + i * o * ho * wo);
      if (bias) dnnl_memory_set_data_handle(cp->bias, const_cast<float *>(bias));
      failed |= !run(cp->in1, {{kArgSrc, cp->a}, {kArgDst, cp->ab}});
      if (bias) failed |= !run(cp->conv, {{kArgSrc, cp->ab}, {kArgWeights, cp->cb}, {kArgBias, cp->bias}, {kArgDst, cp->rb}});
      else failed |= !run(cp->conv, {{kArgSrc, cp->ab}, {kArgWeights, cp->cb}, {kArgDst, cp->rb}});
      failed |= !run(cp->out, {{kArgSrc, cp->rb}, {kArgDst, cp->r}});
    }
  }
  return !failed;
}

// The backward passes likewise: data (dx from dy and the weights) in chunks of images, weights (dw
// and db from x and dy) over each thread's whole share of the batch, its result reordered to plain
// float32 and summed over the threads.
static bool onednn_conv_bwd_data(const float *dy, const float *wt, float *dx, int64_t b, int64_t c, int64_t h,
                                 int64_t w, int64_t o, int64_t k, int64_t s, int64_t p, bool bf) {
  const int64_t ho = (h + 2 * p - k) / s + 1, wo = (w + 2 * p - k) / s + 1;
  int failed = 0;
#pragma omp parallel num_threads(kThreads()) reduction(| : failed)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t i0 = b * t / nt, i1 = b * (t + 1) / nt;
    ConvPrims *weights_for = nullptr;
    for (int64_t i = i0; i < i1 && !failed; i += kConvChunk) {
      const int64_t n = std::min(kConvChunk, i1 - i);
      ConvPrims *cb = conv_prims_for({n, c, h, w, o, k, s, p, false, bf}, kPassData);
      if (!cb) { failed = 1; break; }
      dnnl_memory_set_data_handle(cb->cb, scratch(0, cb->cb_bytes));
      dnnl_memory_set_data_handle(cb->ab, scratch(1, cb->ab_bytes));
      dnnl_memory_set_data_handle(cb->rb, scratch(2, cb->rb_bytes));
      if (cb != weights_for) {
        dnnl_memory_set_data_handle(cb->c, const_cast<float *>(wt));
        failed |= !run(cb->in2, {{kArgSrc, cb->c}, {kArgDst, cb->cb}});
        weights_for = cb;
      }
      dnnl_memory_set_data_handle(cb->a, const_cast<float *>(dy + i * o * ho * wo));
      dnnl_memory_set_data_handle(cb->r, dx + i * c * h * w);
      failed |= !run(cb->in1, {{kArgSrc, cb->a}, {kArgDst, cb->ab}});
      failed |= !run(cb->conv, {{kArgDiffDst, cb->ab}, {kArgWeights, cb->cb}, {kArgDiffSrc, cb->rb}});
      failed |= !run(cb->out, {{kArgSrc, cb->rb}, {kArgDst, cb->r}});
    }
  }
  return !failed;
}

// dw (o, c, k, k) and, with db, the bias gradient, summed over the batch.
static bool onednn_conv_bwd_weights(const float *x, const float *dy, float *dw, float *db, int64_t b, int64_t c,
                                    int64_t h, int64_t w, int64_t o, int64_t k, int64_t s, int64_t p, bool bf) {
  const int64_t ho = (h + 2 * p - k) / s + 1, wo = (w + 2 * p - k) / s + 1, per = o * c * k * k + o;
  const int nt_max = kThreads();
  std::vector<float> partial((size_t)(nt_max * per), 0.f);
  int failed = 0, used = 0;
#pragma omp parallel num_threads(nt_max) reduction(| : failed)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
#pragma omp single
    used = nt;
    const int64_t i0 = b * t / nt, i1 = b * (t + 1) / nt;
    if (i1 > i0) {
      ConvPrims *cb = conv_prims_for({i1 - i0, c, h, w, o, k, s, p, db != nullptr, bf}, kPassWeights);
      if (!cb) {
        failed = 1;
      } else {
        float *mine = partial.data() + (int64_t)t * per;
        dnnl_memory_set_data_handle(cb->ab, scratch(0, cb->ab_bytes));
        dnnl_memory_set_data_handle(cb->cb, scratch(1, cb->cb_bytes));
        dnnl_memory_set_data_handle(cb->rb, scratch(2, cb->rb_bytes));
        dnnl_memory_set_data_handle(cb->a, const_cast<float *>(x + i0 * c * h * w));
        dnnl_memory_set_data_handle(cb->c, const_cast<float *>(dy + i0 * o * ho * wo));
        dnnl_memory_set_data_handle(cb->r, mine);
        dnnl_memory_set_data_handle(cb->bias, mine + o * c * k * k);
        failed |= !run(cb->in1, {{kArgSrc, cb->a}, {kArgDst, cb->ab}});
        failed |= !run(cb->in2, {{kArgSrc, cb->c}, {kArgDst, cb->cb}});
        if (db) failed |= !run(cb->conv, {{kArgSrc, cb->ab}, {kArgDiffDst, cb->cb}, {kArgDiffWeights, cb->rb},
                                          {kArgDiffBias, cb->bias}});
        else failed |= !run(cb->conv, {{kArgSrc, cb->ab}, {kArgDiffDst, cb->cb}, {kArgDiffWeights, cb->rb}});
        failed |= !run(cb->out, {{kArgSrc, cb->rb}, {kArgDst, cb->r}});
      }
    }
  }
  if (failed) return false;
  const int64_t nw = o * c * k * k;
  for (int64_t j = 0; j < nw; ++j) {
    float sum = 0.f;
    for (int t = 0; t < used; ++t) sum += partial[(int64_t)t * per + j];
    dw[j] = sum;
  }
  if (db)
    for (int64_t j = 0; j < o; ++j) {
      float sum = 0.f;
      for (int t = 0; t < used; ++t) sum += partial[(int64_t)t * per + nw + j];
      db[j] = sum;
    }
  return true;
}


// A float32 matrix with, where a bfloat16 product will read it more than once, its rounded copy
// (contiguous rows): an operand is then rounded once instead of once per product, which on an AMX
// host costs more than the small products themselves (docs/experiments/speed_round2.md).
struct Operand {
  const float *f;
  int64_t ld;
  const bf16_t *h = nullptr;
};

// Rounds rows x cols of src (row stride ld) into dst and returns the operand with both.
static Operand rounded(const float *src, int64_t rows, int64_t cols, int64_t ld, std::vector<bf16_t> &dst) {
  dst.resize((size_t)(rows * cols));
  to_bf16_rows(src, rows, cols, ld, dst.data());
  return {src, ld, dst.data()};
}

// sgemm's contract (beta 0 or 1) on operands: in float32 (BF false), or in bfloat16 reading the
// rounded copies where the operands carry them and rounding the others here (alpha folded into A's
// rounding; with an already rounded A, alpha scales the result, beta 0 only). False on failure.
template <bool BF>
static bool gemm_on(char ta, char tb, int64_t m, int64_t n, int64_t k, float alpha, Operand a, Operand b, float beta,
                    float *c, int64_t ldc) {
  if (!BF) return dnnl_sgemm(ta, tb, m, n, k, alpha, a.f, a.ld, b.f, b.ld, beta, c, ldc) == 0;
  thread_local std::vector<bf16_t> a16, b16;
  const int64_t ar = ta == 'N' ? m : k, ac = ta == 'N' ? k : m, br = tb == 'N' ? k : n, bc = tb == 'N' ? n : k;
  float scale_after = 1.f;
  if (!a.h) {
    a16.resize((size_t)(ar * ac));
    to_bf16_rows(a.f, ar, ac, a.ld, a16.data(), alpha);
    a.h = a16.data();
  } else if (alpha != 1.f) {
    if (beta != 0.f) return false;
    scale_after = alpha;
  }
  if (!b.h) b = rounded(b.f, br, bc, b.ld, b16);
  if (!matmul_bf16(ta, tb, m, n, k, a.h, ac, b.h, bc, beta != 0.f, c, ldc)) return false;
  if (scale_after != 1.f)
    for (int64_t i = 0; i < m; ++i) {
      float *row = c + i * ldc;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) row[j] *= scale_after;
    }
  return true;
}

// gemm_on for plain float pointers.
template <bool BF>
static bool gemm(char ta, char tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
                 const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
  return gemm_on<BF>(ta, tb, m, n, k, alpha, {a, lda}, {b, ldb}, beta, c, ldc);
}

// 1x1 stride-1 convolutions are plain matrix products per image, y_i (o x n) = w (o x c) x_i (c x n):
// sgemm (or the bfloat16 matmul) on the tensors as they lie beats oneDNN's convolution, whose
// reorders in and out cost more than the product at these few input channels.
template <bool BF>
static bool conv1x1_fwd(const float *x, const float *wt, const float *bias, float *y, int64_t b, int64_t c,
                        int64_t n, int64_t o) {
  std::vector<bf16_t> w16(BF ? (size_t)(o * c) : 0);
  if (BF) to_bf16_rows(wt, 1, o * c, 0, w16.data());
  int failed = 0;
#pragma omp parallel num_threads(kThreads()) reduction(| : failed)
  {
    std::vector<bf16_t> x16(BF ? (size_t)(c * n) : 0);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < b; ++i) {
      const float *xi = x + i * c * n;
      float *yi = y + i * o * n;
      if (bias)  // start from the bias, accumulate the product on top
        for (int64_t oc = 0; oc < o; ++oc) std::fill(yi + oc * n, yi + (oc + 1) * n, bias[oc]);
      if (BF) {
        to_bf16_rows(xi, 1, c * n, 0, x16.data());
        failed |= !matmul_bf16('N', 'N', o, n, c, w16.data(), c, x16.data(), n, bias != nullptr, yi, n);
      } else {
        dnnl_sgemm('N', 'N', o, n, c, 1.f, wt, c, xi, n, bias ? 1.f : 0.f, yi, n);
      }
    }
  }
  return !failed;
}

// dx_i (c x n) = w^T (c x o) dy_i (o x n), w^T formed once (sgemm's no-transpose path is faster)
template <bool BF>
static bool conv1x1_bwd_data(const float *dy, const float *wt, float *dx, int64_t b, int64_t c, int64_t n, int64_t o) {
  std::vector<float> wt_t((size_t)(c * o));
  for (int64_t oc = 0; oc < o; ++oc)
    for (int64_t ic = 0; ic < c; ++ic) wt_t[ic * o + oc] = wt[oc * c + ic];
  std::vector<bf16_t> wt16(BF ? (size_t)(c * o) : 0);
  if (BF) to_bf16_rows(wt_t.data(), 1, c * o, 0, wt16.data());
  int failed = 0;
#pragma omp parallel num_threads(kThreads()) reduction(| : failed)
  {
    std::vector<bf16_t> dy16(BF ? (size_t)(o * n) : 0);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < b; ++i) {
      const float *dyi = dy + i * o * n;
      float *dxi = dx + i * c * n;
      if (BF) {
        to_bf16_rows(dyi, 1, o * n, 0, dy16.data());
        failed |= !matmul_bf16('N', 'N', c, n, o, wt16.data(), o, dy16.data(), n, false, dxi, n);
      } else {
        dnnl_sgemm('N', 'N', c, n, o, 1.f, wt_t.data(), o, dyi, n, 0.f, dxi, n);
      }
    }
  }
  return !failed;
}

// dw^T (c x o) += x_i (c x n) dy_i^T per thread, then summed, transposed, over the threads; db = sum dy
template <bool BF>
static bool conv1x1_bwd_weights(const float *x, const float *dy, float *dw, float *db, int64_t b, int64_t c,
                                int64_t n, int64_t o) {
  const int nt = b >= kThreads() ? kThreads() : 1;
  const int64_t per = c * o + o;
  std::vector<float> partial((size_t)(nt * per), 0.f);
  int failed = 0;
#pragma omp parallel num_threads(nt) reduction(| : failed)
  {
    float *acc = partial.data() + (int64_t)omp_get_thread_num() * per;
    std::vector<bf16_t> x16(BF ? (size_t)(c * n) : 0), dy16(BF ? (size_t)(o * n) : 0);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < b; ++i) {
      const float *xi = x + i * c * n, *dyi = dy + i * o * n;
      if (BF) {
        to_bf16_rows(xi, 1, c * n, 0, x16.data());
        to_bf16_rows(dyi, 1, o * n, 0, dy16.data());
        failed |= !matmul_bf16('N', 'T', c, o, n, x16.data(), n, dy16.data(), n, true, acc, o);
      } else {
        dnnl_sgemm('N', 'T', c, o, n, 1.f, xi, n, dyi, n, 1.f, acc, o);
      }
      if (db)
        for (int64_t oc = 0; oc < o; ++oc) {
          float sum = 0.f;
          const float *row = dyi + oc * n;
#pragma omp simd reduction(+ : sum)
          for (int64_t j = 0; j < n; ++j) sum += row[j];
          acc[c * o + oc] += sum;
        }
    }
  }
  for (int64_t oc = 0; oc < o; ++oc)
    for (int64_t ic = 0; ic < c; ++ic) {
      float sum = 0.f;
      for (int t = 0; t < nt; ++t) sum += partial[(int64_t)t * per + ic * o + oc];
      dw[oc * c + ic] = sum;
    }
  if (db)
    for (int64_t oc = 0; oc < o; ++oc) {
      float sum = 0.f;
      for (int t = 0; t < nt; ++t) sum += partial[(int64_t)t * per + c * o + oc];
      db[oc] = sum;
    }
  return !failed;
}

// The convolution entry points. inputs: x (b,c,h,w), w (o,c,k,k)[, bias (o)]; output y (b,o,ho,wo).
template <int S, int P, bool BIAS, bool BF>
static int conv_fwd(int nparam, void **params, int *ndims, int64_t **shapes) {
  if (nparam != (BIAS ? 4 : 3)) return 1;
  const int64_t *x = shapes[0], *w = shapes[1];
  if (w[2] == 1 && S == 1 && P == 0)
    return conv1x1_fwd<BF>((const float *)params[0], (const float *)params[1], BIAS ? (const float *)params[2] : nullptr,
                           (float *)params[BIAS ? 3 : 2], x[0], x[1], x[2] * x[3], w[0]) ? 0 : 7;
  return onednn_conv_fwd((const float *)params[0], (const float *)params[1],
                         BIAS ? (const float *)params[2] : nullptr, (float *)params[BIAS ? 3 : 2], x[0], x[1], x[2],
                         x[3], w[0], w[2], S, P, BF) ? 0 : 7;
}

// inputs: dy (b,o,ho,wo), w (o,c,k,k), x (b,c,h,w) [shape only]; output dx (b,c,h,w).
template <int S, int P, bool BF>
static int conv_bwd_input(int nparam, void **params, int *ndims, int64_t **shapes) {
  if (nparam != 4) return 1;
  const int64_t *x = shapes[2], *w = shapes[1];
  if (w[2] == 1 && S == 1 && P == 0)
    return conv1x1_bwd_data<BF>((const float *)params[0], (const float *)params[1], (float *)params[3], x[0], x[1],
                                x[2] * x[3], w[0]) ? 0 : 7;
  return onednn_conv_bwd_data((const float *)params[0], (const float *)params[1], (float *)params[3], x[0], x[1],
                              x[2], x[3], w[0], w[2], S, P, BF) ? 0 : 7;
}

// inputs: x (b,c,h,w), dy (b,o,ho,wo), w (o,c,k,k) [shape only]; outputs dw (o,c,k,k)[, dbias (o)].
template <int S, int P, bool BIAS, bool BF>
static int conv_bwd_weight(int nparam, void **params, int *ndims, int64_t **shapes) {
  if (nparam != (BIAS ? 5 : 4)) return 1;
  const int64_t *x = shapes[0], *w = shapes[2];
  if (w[2] == 1 && S == 1 && P == 0)
    return conv1x1_bwd_weights<BF>((const float *)params[0], (const float *)params[1], (float *)params[3],
                                   BIAS ? (float *)params[4] : nullptr, x[0], x[1], x[2] * x[3], w[0]) ? 0 : 7;
  return onednn_conv_bwd_weights((const float *)params[0], (const float *)params[1], (float *)params[3],
                                 BIAS ? (float *)params[4] : nullptr, x[0], x[1], x[2], x[3], w[0], w[2], S, P, BF)
             ? 0 : 7;
}

#define AOT_ARGS int n, void **p, int *nd, int64_t **sh, const char **, void *, void *
#define DEFINE_AS(S, P, BF, SUFFIX) \
  extern "C" int ConvFwd_s##S##_p##P##SUFFIX(AOT_ARGS) { return conv_fwd<S, P, false, BF>(n, p, nd, sh); } \
  extern "C" int ConvBiasFwd_s##S##_p##P##SUFFIX(AOT_ARGS) { return conv_fwd<S, P, true, BF>(n, p, nd, sh); } \
  extern "C" int ConvBwdInput_s##S##_p##P##SUFFIX(AOT_ARGS) { return conv_bwd_input<S, P, BF>(n, p, nd, sh); } \
  extern "C" int ConvBwdWeight_s##S##_p##P##SUFFIX(AOT_ARGS) { return conv_bwd_weight<S, P, false, BF>(n, p, nd, sh); } \
  extern "C" int ConvBiasBwdWeight_s##S##_p##P##SUFFIX(AOT_ARGS) { return conv_bwd_weight<S, P, true, BF>(n, p, nd, sh); }
#define DEFINE(S, P) DEFINE_AS(S, P, false, ) DEFINE_AS(S, P, true, _bf16)
DEFINE(1, 0) DEFINE(1, 1) DEFINE(1, 2) DEFINE(1, 3) DEFINE(2, 0) DEFINE(2, 1) DEFINE(2, 2) DEFINE(2, 3)

// ---------------------------------------------------------------------------------------------
// GroupNorm over x viewed as (b, g, c/g * spatial). Forward inputs: x, gamma (c), beta (c);
// outputs: y, mean (b, g), rstd (b, g). Backward inputs: dy, x, mean, rstd, gamma; outputs: dx,
// dgamma, dbeta. The group count is in the input's shape, so one entry point serves every layer.
// Mean and 1/sqrt(var + eps) of n contiguous values (two passes, double accumulators).
static void group_stats(const float *xs, int64_t n, float eps, float *mean, float *rstd) {
  double s = 0.0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += xs[i];
  const float m = (float)(s / n);
  double v = 0.0;
#pragma omp simd reduction(+ : v)
  for (int64_t i = 0; i < n; ++i) { float d = xs[i] - m; v += (double)d * d; }
  *mean = m;
  *rstd = 1.0f / std::sqrt((float)(v / n) + eps);
}

// GroupNorm's input gradient for one (sample, group): dx = r * (du * gamma - k1 - xhat * k2), where
// du is the gradient at the normalised-and-scaled output and k1, k2 are the group means of
// du * gamma and du * gamma * xhat.
static void group_input_grad(const float *xs, const float *du, const float *gamma, int64_t cg, int64_t hw,
                             float m, float r, float k1, float k2, float *dx) {
  for (int64_t ci = 0; ci < cg; ++ci) {
    const float gm = gamma[ci];
    const float *xc = xs + ci * hw, *dc = du + ci * hw; float *oc = dx + ci * hw;
    for (int64_t i = 0; i < hw; ++i) { float xh = (xc[i] - m) * r; oc[i] = r * (dc[i] * gm - k1 - xh * k2); }
  }
}

// dgamma, dbeta: per-(sample, channel) partial sums of du * xhat and du, added over the batch.
static void affine_grads(const float *sdu, const float *sdux, int64_t b, int64_t c, float *dgamma, float *dbeta) {
  for (int64_t ci = 0; ci < c; ++ci) {
    float a = 0.f, ax = 0.f;
    for (int64_t bb = 0; bb < b; ++bb) { a += sdu[bb * c + ci]; ax += sdux[bb * c + ci]; }
    dbeta[ci] = a; dgamma[ci] = ax;
  }
}

template <int EPS_E>
static int group_norm_fwd(int nparam, void **params, int *ndims, int64_t **shapes) {
  if (nparam != 6) return 1;
  const float eps = EPS_E == 5 ? 1e-5f : 1e-6f;
  const float *x = (const float *)params[0], *gamma = (const float *)params[1], *beta = (const float *)params[2];
  float *y = (float *)params[3], *mean = (float *)params[4], *rstd = (float *)params[5];
  if (ndims[0] != 3) return 3;
  int64_t b = shapes[0][0], g = shapes[0][1], n = shapes[0][2], c = shapes[1][0], cg = c / g, hw = n / cg;
#pragma omp parallel for num_threads(kThreads()) schedule(static)
  for (int64_t bg = 0; bg < b * g; ++bg) {
    const float *xs = x + bg * n;
    group_stats(xs, n, eps, mean + bg, rstd + bg);
    const float m = mean[bg], r = rstd[bg];
    float *ys = y + bg * n;
    int64_t c0 = (bg % g) * cg;
    for (int64_t ci = 0; ci < cg; ++ci) {
      const float a = r * gamma[c0 + ci], sh = beta[c0 + ci] - m * a;
      const float *xc = xs + ci * hw; float *yc = ys + ci * hw;
      for (int64_t i = 0; i < hw; ++i) yc[i] = xc[i] * a + sh;
    }
  }
  return 0;
}

static int group_norm_bwd(int nparam, void **params, int *ndims, int64_t **shapes) {
  if (nparam != 8) return 1;
  const float *dy = (const float *)params[0], *x = (const float *)params[1];
  const float *mean = (const float *)params[2], *rstd = (const float *)params[3], *gamma = (const float *)params[4];
  float *dx = (float *)params[5], *dgamma = (float *)params[6], *dbeta = (float *)params[7];
  if (ndims[1] != 3) return 3;
  int64_t b = shapes[1][0], g = shapes[1][1], n = shapes[1][2], c = shapes[4][0], cg = c / g, hw = n / cg;
  std::vector<float> sdy((size_t)(b * c)), sdyx((size_t)(b * c));  // per (b, c): sum dy, sum dy * xhat
#pragma omp parallel for num_threads(kThreads()) schedule(static)
  for (int64_t bg = 0; bg < b * g; ++bg) {
    const float m = mean[bg], r = rstd[bg];
    int64_t c0 = (bg % g) * cg, bb = bg / g;
    const float *xs = x + bg * n, *dys = dy + bg * n;
    double s1 = 0.0, s2 = 0.0;  // sum dxhat, sum dxhat * xhat over the group
    for (int64_t ci = 0; ci < cg; ++ci) {
      const float *xc = xs + ci * hw, *dc = dys + ci * hw;
      float a = 0.f, ax = 0.f;
#pragma omp simd reduction(+ : a, ax)
      for (int64_t i = 0; i < hw; ++i) { float xh = (xc[i] - m) * r; a += dc[i]; ax += dc[i] * xh; }
      sdy[bb * c + c0 + ci] = a; sdyx[bb * c + c0 + ci] = ax;
      s1 += (double)a * gamma[c0 + ci]; s2 += (double)ax * gamma[c0 + ci];
    }
    group_input_grad(xs, dys, gamma + c0, cg, hw, m, r, (float)(s1 / n), (float)(s2 / n), dx + bg * n);
  }
  affine_grads(sdy.data(), sdyx.data(), b, c, dgamma, dbeta);
  return 0;
}

extern "C" int GroupNormFwd_eps5(AOT_ARGS) { return group_norm_fwd<5>(n, p, nd, sh); }
extern "C" int GroupNormFwd_eps6(AOT_ARGS) { return group_norm_fwd<6>(n, p, nd, sh); }
extern "C" int GroupNormBwd(AOT_ARGS) { return group_norm_bwd(n, p, nd, sh); }

// Softmax of n contiguous values x into y (which may be x), vectorised.
static void softmax_row(const float *x, float *y, int64_t n) {
  float m = x[0], z = 0.f;
#pragma omp simd reduction(max : m)
  for (int64_t j = 1; j < n; ++j) m = x[j] > m ? x[j] : m;
#pragma omp simd reduction(+ : z)
  for (int64_t j = 0; j < n; ++j) { const float e = fast_exp(x[j] - m); y[j] = e; z += e; }
  const float iz = 1.f / z;
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) y[j] *= iz;
}

// softmax over the d rows of a (d x n) block, for every column (vectorised along the rows)
static void softmax_columns(const float *x, int64_t d, int64_t n, float *y, float *tmp) {
  float *m = tmp, *z = tmp + n;
  std::memcpy(m, x, sizeof(float) * n);
  std::fill(z, z + n, 0.f);
  for (int64_t i = 1; i < d; ++i) {
    const float *xr = x + i * n;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) m[j] = xr[j] > m[j] ? xr[j] : m[j];
  }
  for (int64_t i = 0; i < d; ++i) {
    const float *xr = x + i * n; float *yr = y + i * n;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) { const float e = fast_exp(xr[j] - m[j]); yr[j] = e; z[j] += e; }
  }
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) z[j] = 1.f / z[j];
  for (int64_t i = 0; i < d; ++i) {
    float *yr = y + i * n;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) yr[j] *= z[j];
  }
}

// ---------------------------------------------------------------------------------------------
// Softmax over one axis of a tensor viewed as (outer, r, inner): axis -1 has inner = 1.
// The reduced length r comes from the extra `axis_len` convention: the caller passes the view
// shape as the tensor's own (3-D) shape.
static int softmax_fwd(int nparam, void **params, int *ndims, int64_t **shapes) {
  if (nparam != 2 || ndims[0] != 3) return 1;
  const float *x = (const float *)params[0]; float *y = (float *)params[1];
  int64_t outer = shapes[0][0], r = shapes[0][1], inner = shapes[0][2];
#pragma omp parallel num_threads(kThreads())
  {
    std::vector<float> tmp((size_t)(2 * inner));
#pragma omp for schedule(static)
    for (int64_t o = 0; o < outer; ++o) {
      const float *xs = x + o * r * inner; float *ys = y + o * r * inner;
      if (inner == 1) softmax_row(xs, ys, r);  // along contiguous memory
      else softmax_columns(xs, r, inner, ys, tmp.data());  // along a strided axis, vectorised across it
    }
  }
  return 0;
}

// inputs: y (softmax output), dy; output dx = y * (dy - sum(dy * y)) over the axis
static int softmax_bwd(int nparam, void **params, int *ndims, int64_t **shapes) {
  if (nparam != 3 || ndims[0] != 3) return 1;
  const float *y = (const float *)params[0], *dy = (const float *)params[1]; float *dx = (float *)params[2];
  int64_t outer = shapes[0][0], r = shapes[0][1], inner = shapes[0][2];
#pragma omp parallel num_threads(kThreads())
  {
    std::vector<float> s((size_t)inner);
#pragma omp for schedule(static)
    for (int64_t o = 0; o < outer; ++o) {
      const float *ys = y + o * r * inner, *ds = dy + o * r * inner; float *xs = dx + o * r * inner;
      if (inner == 1) {
        float d = 0.f;
#pragma omp simd reduction(+ : d)
        for (int64_t j = 0; j < r; ++j) d += ys[j] * ds[j];
        for (int64_t j = 0; j < r; ++j) xs[j] = ys[j] * (ds[j] - d);
        continue;
      }
      for (int64_t i = 0; i < inner; ++i) s[i] = 0.f;
      for (int64_t j = 0; j < r; ++j) for (int64_t i = 0; i < inner; ++i) s[i] += ys[j * inner + i] * ds[j * inner + i];
      for (int64_t j = 0; j < r; ++j) for (int64_t i = 0; i < inner; ++i)
        xs[j * inner + i] = ys[j * inner + i] * (ds[j * inner + i] - s[i]);
    }
  }
  return 0;
}

extern "C" int SoftmaxFwd(AOT_ARGS) { return softmax_fwd(n, p, nd, sh); }
extern "C" int SoftmaxBwd(AOT_ARGS) { return softmax_bwd(n, p, nd, sh); }

// ---------------------------------------------------------------------------------------------
// Nearest-neighbour 2x upsampling of (b, c, h, w) and its adjoint (sum over each 2x2 block).
static int upsample2x_fwd(int nparam, void **params, int *ndims, int64_t **shapes) {
  if (nparam != 2) return 1;
  const float *x = (const float *)params[0]; float *y = (float *)params[1];
  int64_t bc = shapes[0][0] * shapes[0][1], h = shapes[0][2], w = shapes[0][3];
#pragma omp parallel for num_threads(kThreads()) schedule(static)
  for (int64_t p = 0; p < bc; ++p) {
    const float *xs = x + p * h * w; float *ys = y + p * 4 * h * w;
    for (int64_t i = 0; i < h; ++i) {
      float *r0 = ys + (2 * i) * 2 * w, *r1 = r0 + 2 * w;
      for (int64_t j = 0; j < w; ++j) { float v = xs[i * w + j]; r0[2 * j] = r0[2 * j + 1] = v; }
      std::memcpy(r1, r0, sizeof(float) * 2 * w);
    }
  }
  return 0;
}

// inputs: dy (b, c, 2h, 2w), x (b, c, h, w) [shape only]; output dx (b, c, h, w)
static int upsample2x_bwd(int nparam, void **params, int *ndims, int64_t **shapes) {
  if (nparam != 3) return 1;
  const float *dy = (const float *)params[0]; float *dx = (float *)params[2];
  int64_t bc = shapes[1][0] * shapes[1][1], h = shapes[1][2], w = shapes[1][3];
#pragma omp parallel for num_threads(kThreads()) schedule(static)
  for (int64_t p = 0; p < bc; ++p) {
    const float *ds = dy + p * 4 * h * w; float *xs = dx + p * h * w;
    for (int64_t i = 0; i < h; ++i) {
      const float *r0 = ds + (2 * i) * 2 * w, *r1 = r0 + 2 * w;
      for (int64_t j = 0; j < w; ++j) xs[i * w + j] = r0[2 * j] + r0[2 * j + 1] + r1[2 * j] + r1[2 * j + 1];
    }
  }
  return 0;
}

extern "C" int Upsample2xFwd(AOT_ARGS) { return upsample2x_fwd(n, p, nd, sh); }
extern "C" int Upsample2xBwd(AOT_ARGS) { return upsample2x_bwd(n, p, nd, sh); }

// ---------------------------------------------------------------------------------------------
// GroupNorm, then a per-sample, per-channel affine modulation, then SiLU, in one pass: the
// ResNet block's "norm -> x * (scale + 1) + shift -> SiLU". x is viewed as (b, g, c/g * spatial),
// scale and shift are (b, c). Forward outputs: y, mean (b, g), rstd (b, g). Backward recomputes
// the pre-activation from x and the statistics instead of storing it.
static inline float sigmoidf(float z) { return 1.f / (1.f + fast_exp(-z)); }

// MOD false: SiLU(GroupNorm(x)) alone (the DDPM U-Net's "norm -> SiLU"), without the scale and
// shift inputs and their gradients.
template <int EPS_E, bool MOD>
static int gn_silu_fwd(int nparam, void **params, int *ndims, int64_t **shapes) {
  if (nparam != (MOD ? 8 : 6) || ndims[0] != 3) return 1;
  const float eps = EPS_E == 5 ? 1e-5f : 1e-6f;
  const float *x = (const float *)params[0], *gamma = (const float *)params[1], *beta = (const float *)params[2];
  const float *scale = MOD ? (const float *)params[3] : nullptr, *shift = MOD ? (const float *)params[4] : nullptr;
  const int o = MOD ? 5 : 3;
  float *y = (float *)params[o], *mean = (float *)params[o + 1], *rstd = (float *)params[o + 2];
  int64_t b = shapes[0][0], g = shapes[0][1], n = shapes[0][2], c = shapes[1][0], cg = c / g, hw = n / cg;
#pragma omp parallel for num_threads(kThreads()) schedule(static)
  for (int64_t bg = 0; bg < b * g; ++bg) {
    const float *xs = x + bg * n;
    group_stats(xs, n, eps, mean + bg, rstd + bg);
    const float m = mean[bg], r = rstd[bg];
    int64_t c0 = (bg % g) * cg, bb = bg / g;
    for (int64_t ci = 0; ci < cg; ++ci) {
      const int64_t ch = c0 + ci;
      const float k = MOD ? 1.f + scale[bb * c + ch] : 1.f, s0 = MOD ? shift[bb * c + ch] : 0.f;
      const float a = r * gamma[ch] * k, sh = (beta[ch] - m * r * gamma[ch]) * k + s0;
      const float *xc = xs + ci * hw; float *yc = y + bg * n + ci * hw;
#pragma omp simd
      for (int64_t i = 0; i < hw; ++i) { float z = xc[i] * a + sh; yc[i] = z * sigmoidf(z); }
    }
  }
  return 0;
}

// inputs: dy, x, mean, rstd, gamma, beta[, scale, shift]; outputs dx, dgamma, dbeta[, dscale, dshift]
template <bool MOD>
static int gn_silu_bwd(int nparam, void **params, int *ndims, int64_t **shapes) {
  if (nparam != (MOD ? 13 : 9) || ndims[1] != 3) return 1;
  const float *dy = (const float *)params[0], *x = (const float *)params[1];
  const float *mean = (const float *)params[2], *rstd = (const float *)params[3];
  const float *gamma = (const float *)params[4], *beta = (const float *)params[5];
  const float *scale = MOD ? (const float *)params[6] : nullptr, *shift = MOD ? (const float *)params[7] : nullptr;
  const int o = MOD ? 8 : 6;
  float *dx = (float *)params[o], *dgamma = (float *)params[o + 1], *dbeta = (float *)params[o + 2];
  float *dscale = MOD ? (float *)params[11] : nullptr, *dshift = MOD ? (float *)params[12] : nullptr;
  int64_t b = shapes[1][0], g = shapes[1][1], n = shapes[1][2], c = shapes[4][0], cg = c / g, hw = n / cg;
  std::vector<float> sdu((size_t)(b * c)), sdux((size_t)(b * c));  // per (b, c): sum du, sum du * xhat
#pragma omp parallel num_threads(kThreads())
  {
    std::vector<float> du((size_t)n);
#pragma omp for schedule(static)
    for (int64_t bg = 0; bg < b * g; ++bg) {
      const float m = mean[bg], r = rstd[bg];
      int64_t c0 = (bg % g) * cg, bb = bg / g;
      const float *xs = x + bg * n, *dys = dy + bg * n;
      double s1 = 0.0, s2 = 0.0;
      for (int64_t ci = 0; ci < cg; ++ci) {
        const int64_t ch = c0 + ci;
        const float k = MOD ? 1.f + scale[bb * c + ch] : 1.f, sft = MOD ? shift[bb * c + ch] : 0.f;
        const float *xc = xs + ci * hw, *dc = dys + ci * hw; float *duc = du.data() + ci * hw;
        float a_du = 0.f, a_dux = 0.f, a_dz = 0.f, a_dzu = 0.f;
#pragma omp simd reduction(+ : a_du, a_dux, a_dz, a_dzu)
        for (int64_t i = 0; i < hw; ++i) {
          const float xh = (xc[i] - m) * r, u = xh * gamma[ch] + beta[ch], z = u * k + sft;
          const float sg = sigmoidf(z), dz = dc[i] * sg * (1.f + z * (1.f - sg));
          a_dz += dz; a_dzu += dz * u;
          const float d = dz * k;  // gradient at the GroupNorm output u
          duc[i] = d; a_du += d; a_dux += d * xh;
        }
        if (MOD) { dshift[bb * c + ch] = a_dz; dscale[bb * c + ch] = a_dzu; }
        sdu[bb * c + ch] = a_du; sdux[bb * c + ch] = a_dux;
        s1 += (double)a_du * gamma[ch]; s2 += (double)a_dux * gamma[ch];
      }
      group_input_grad(xs, du.data(), gamma + c0, cg, hw, m, r, (float)(s1 / n), (float)(s2 / n), dx + bg * n);
    }
  }
  affine_grads(sdu.data(), sdux.data(), b, c, dgamma, dbeta);
  return 0;
}

extern "C" int GroupNormSiluFwd(AOT_ARGS) { return gn_silu_fwd<5, true>(n, p, nd, sh); }
extern "C" int GroupNormSiluFwd_eps6(AOT_ARGS) { return gn_silu_fwd<6, true>(n, p, nd, sh); }
extern "C" int GroupNormSiluBwd(AOT_ARGS) { return gn_silu_bwd<true>(n, p, nd, sh); }
extern "C" int GroupNormSiluPlainFwd_eps5(AOT_ARGS) { return gn_silu_fwd<5, false>(n, p, nd, sh); }
extern "C" int GroupNormSiluPlainFwd_eps6(AOT_ARGS) { return gn_silu_fwd<6, false>(n, p, nd, sh); }
extern "C" int GroupNormSiluPlainBwd(AOT_ARGS) { return gn_silu_bwd<false>(n, p, nd, sh); }

// ---------------------------------------------------------------------------------------------
// Batched matrix product over the leading dimensions, a^(T) . b^(T), as used by attention.
// MindSpore's CPU BatchMatMul costs about 1.8 ms a call even for tiny matrices.
template <char TA, char TB, bool BF>
static int batch_matmul(int nparam, void **params, int *ndims, int64_t **shapes) {
  if (nparam != 3 || ndims[0] < 2 || ndims[0] != ndims[1]) return 1;
  const float *a = (const float *)params[0], *b = (const float *)params[1];
  float *c = (float *)params[2];
  int nd = ndims[0];
  int64_t batch = 1;
  for (int i = 0; i < nd - 2; ++i) batch *= shapes[0][i];
  const int64_t ar = shapes[0][nd - 2], ac = shapes[0][nd - 1], br = shapes[1][nd - 2], bc = shapes[1][nd - 1];
  const int64_t m = TA == 'N' ? ar : ac, k = TA == 'N' ? ac : ar, n = TB == 'N' ? bc : br;
  int failed = 0;
#pragma omp parallel for num_threads(kThreads()) schedule(static) reduction(| : failed)
  for (int64_t i = 0; i < batch; ++i)
    failed |= !gemm<BF>(TA, TB, m, n, k, 1.f, a + i * ar * ac, ac, b + i * br * bc, bc, 0.f, c + i * m * n, n);
  return failed ? 7 : 0;
}

extern "C" int BatchMatMulNN(AOT_ARGS) { return batch_matmul<'N', 'N', false>(n, p, nd, sh); }
extern "C" int BatchMatMulTN(AOT_ARGS) { return batch_matmul<'T', 'N', false>(n, p, nd, sh); }
extern "C" int BatchMatMulNT(AOT_ARGS) { return batch_matmul<'N', 'T', false>(n, p, nd, sh); }
extern "C" int BatchMatMulNN_bf16(AOT_ARGS) { return batch_matmul<'N', 'N', true>(n, p, nd, sh); }
extern "C" int BatchMatMulTN_bf16(AOT_ARGS) { return batch_matmul<'T', 'N', true>(n, p, nd, sh); }
extern "C" int BatchMatMulNT_bf16(AOT_ARGS) { return batch_matmul<'N', 'T', true>(n, p, nd, sh); }

// ---------------------------------------------------------------------------------------------
// Linear attention (Shen et al. 2018) of one U-Net level with its q, k, v projection, per image in
// cache: qkv = w x (a 1x1 convolution without bias, 3 heads d rows), then per head q softmaxed over
// its d features, k over the n pixels, context = s k v^T (d x d), out = context^T q (d x n),
// s = 1/sqrt(d). As graph ops this is a convolution writing three (b, heads, d, n) tensors, two
// softmaxes, two batched products and all their backward passes; here q, k, v and their softmaxes
// never leave the thread's buffers, and the backward pass recomputes them instead of storing them.
// Inputs x (b, c, h, w), w (3, heads, d, c); output (b, heads, d, h w).

struct LinearAttentionBuffers {
  std::vector<float> qkv, dqkv, qs, ks, ctx, dctx, g, tmp;
  // bfloat16 copies, each rounded once per use: the softmaxes, v and dout of one head; the image
  // and the projection's gradient; the projection's weights (once per call)
  std::vector<bf16_t> qs16, ks16, v16, go16, x16, dqkv16, w16;
  Operand qs_op, ks_op, v_op;
  LinearAttentionBuffers(int64_t rows, int64_t d, int64_t n)
      : qkv(rows * n), dqkv(rows * n), qs(d * n), ks(d * n), ctx(d * d), dctx(d * d), g(d * n), tmp(2 * n),
        qs_op{nullptr, n}, ks_op{nullptr, n}, v_op{nullptr, n} {}
};

// One head: q, k, v (d x n) -> the softmaxes in buf.qs, buf.ks, the context in buf.ctx, out (d x n)
template <bool BF>
static bool la_head_forward(const float *q, const float *k, const float *v, int64_t d, int64_t n,
                            LinearAttentionBuffers &buf, float *out) {
  const float s = 1.f / std::sqrt((float)d);
  softmax_columns(q, d, n, buf.qs.data(), buf.tmp.data());
  for (int64_t r = 0; r < d; ++r) softmax_row(k + r * n, buf.ks.data() + r * n, n);
  buf.qs_op = {buf.qs.data(), n}, buf.ks_op = {buf.ks.data(), n}, buf.v_op = {v, n};
  if (BF) {  // each is read by two products (in the backward pass)
    buf.ks_op = rounded(buf.ks.data(), d, n, n, buf.ks16);
    buf.v_op = rounded(v, d, n, n, buf.v16);
    if (!out) buf.qs_op = rounded(buf.qs.data(), d, n, n, buf.qs16);
  }
  bool ok = gemm_on<BF>('N', 'T', d, d, n, s, buf.ks_op, buf.v_op, 0.f, buf.ctx.data(), d);  // ctx = s k v^T
  if (out) ok = ok && gemm_on<BF>('T', 'N', d, n, d, 1.f, {buf.ctx.data(), d}, buf.qs_op, 0.f, out, n);
  return ok;
}

// One head's backward: dout (d x n) -> dq, dk, dv (d x n), after la_head_forward(out = nullptr) (whose v it reads)
template <bool BF>
static bool la_head_backward(const float *go, int64_t d, int64_t n, LinearAttentionBuffers &buf, float *dq,
                             float *dk, float *dv) {
  const float s = 1.f / std::sqrt((float)d);
  const float *qs = buf.qs.data(), *ks = buf.ks.data();
  float *g = buf.g.data(), *col = buf.tmp.data();
  const Operand go_op = BF ? rounded(go, d, n, n, buf.go16) : Operand{go, n}, ctx{buf.ctx.data(), d}, dctx{buf.dctx.data(), d};
  bool ok = gemm_on<BF>('N', 'T', d, d, n, 1.f, buf.qs_op, go_op, 0.f, buf.dctx.data(), d);  // dctx = qs dout^T
  // through q's softmax (over the d rows of each column): dq = qs (g - sum_rows(qs g)), g = ctx dout
  ok = ok && gemm_on<BF>('N', 'N', d, n, d, 1.f, ctx, go_op, 0.f, g, n);
  std::fill(col, col + n, 0.f);
  for (int64_t r = 0; r < d; ++r) {
    const float *qr = qs + r * n, *gr = g + r * n;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) col[j] += qr[j] * gr[j];
  }
  for (int64_t r = 0; r < d; ++r) {
    const float *qr = qs + r * n, *gr = g + r * n; float *o = dq + r * n;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) o[j] = qr[j] * (gr[j] - col[j]);
  }
  // dv = s dctx^T ks; through k's softmax (over each row): dk = ks (g - sum(ks g)), g = s dctx v
  ok = ok && gemm_on<BF>('T', 'N', d, n, d, s, dctx, buf.ks_op, 0.f, dv, n);
  ok = ok && gemm_on<BF>('N', 'N', d, n, d, s, dctx, buf.v_op, 0.f, g, n);
  for (int64_t r = 0; r < d; ++r) {
    const float *kr = ks + r * n, *gr = g + r * n; float *o = dk + r * n;
    float dot = 0.f;
#pragma omp simd reduction(+ : dot)
    for (int64_t j = 0; j < n; ++j) dot += kr[j] * gr[j];
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) o[j] = kr[j] * (gr[j] - dot);
  }
  return ok;
}

template <bool BF>
static int linear_attention_fwd(int nparam, void **params, int *ndims, int64_t **shapes) {
  if (nparam != 3 || ndims[0] != 4 || ndims[1] != 4) return 1;
  const float *x = (const float *)params[0], *w = (const float *)params[1];
  float *out = (float *)params[2];
  const int64_t b = shapes[0][0], c = shapes[0][1], n = shapes[0][2] * shapes[0][3];
  const int64_t heads = shapes[1][1], d = shapes[1][2], rows = 3 * heads * d;
  int failed = 0;
#pragma omp parallel num_threads(kThreads()) reduction(| : failed)
  {
    LinearAttentionBuffers buf(rows, d, n);
    const Operand w_op = BF ? rounded(w, rows, c, c, buf.w16) : Operand{w, c};
#pragma omp for schedule(static)
    for (int64_t i = 0; i < b; ++i) {
      float *qkv = buf.qkv.data();
      failed |= !gemm_on<BF>('N', 'N', rows, n, c, 1.f, w_op, {x + i * c * n, n}, 0.f, qkv, n);
      for (int64_t h = 0; h < heads; ++h)
        failed |= !la_head_forward<BF>(qkv + h * d * n, qkv + (heads + h) * d * n, qkv + (2 * heads + h) * d * n,
                                       d, n, buf, out + (i * heads + h) * d * n);
    }
  }
  return failed ? 7 : 0;
}

// inputs: dout (b, heads, d, n), x, w; outputs dx (b, c, h, w), dw (3, heads, d, c)
template <bool BF>
static int linear_attention_bwd(int nparam, void **params, int *ndims, int64_t **shapes) {
  if (nparam != 5 || ndims[1] != 4 || ndims[2] != 4) return 1;
  const float *dout = (const float *)params[0], *x = (const float *)params[1], *w = (const float *)params[2];
  float *dx = (float *)params[3], *dw = (float *)params[4];
  const int64_t b = shapes[1][0], c = shapes[1][1], n = shapes[1][2] * shapes[1][3];
  const int64_t heads = shapes[2][1], d = shapes[2][2], rows = 3 * heads * d;
  const int nt = b >= kThreads() ? kThreads() : 1;
  std::vector<float> partial((size_t)(nt * rows * c), 0.f);
  int failed = 0;
#pragma omp parallel num_threads(nt) reduction(| : failed)
  {
    LinearAttentionBuffers buf(rows, d, n);
    float *dw_mine = partial.data() + (int64_t)omp_get_thread_num() * rows * c;
    const Operand w_op = BF ? rounded(w, rows, c, c, buf.w16) : Operand{w, c};
#pragma omp for schedule(static)
    for (int64_t i = 0; i < b; ++i) {
      const float *xi = x + i * c * n;
      const Operand x_op = BF ? rounded(xi, c, n, n, buf.x16) : Operand{xi, n};
      float *qkv = buf.qkv.data(), *dqkv = buf.dqkv.data();
      failed |= !gemm_on<BF>('N', 'N', rows, n, c, 1.f, w_op, x_op, 0.f, qkv, n);
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t oq = h * d * n, ok = (heads + h) * d * n, ov = (2 * heads + h) * d * n;
        failed |= !la_head_forward<BF>(qkv + oq, qkv + ok, qkv + ov, d, n, buf, nullptr);
        failed |= !la_head_backward<BF>(dout + (i * heads + h) * d * n, d, n, buf, dqkv + oq, dqkv + ok, dqkv + ov);
      }
      // through the projection: dw += dqkv x_i^T, dx_i = w^T dqkv
      const Operand dqkv_op = BF ? rounded(dqkv, rows, n, n, buf.dqkv16) : Operand{dqkv, n};
      failed |= !gemm_on<BF>('N', 'T', rows, c, n, 1.f, dqkv_op, x_op, 1.f, dw_mine, c);
      failed |= !gemm_on<BF>('T', 'N', c, n, rows, 1.f, w_op, dqkv_op, 0.f, dx + i * c * n, n);
    }
  }
  for (int64_t j = 0; j < rows * c; ++j) {
    float sum = 0.f;
    for (int t = 0; t < nt; ++t) sum += partial[(int64_t)t * rows * c + j];
    dw[j] = sum;
  }
  return failed ? 7 : 0;
}

extern "C" int LinearAttentionFwd(AOT_ARGS) { return linear_attention_fwd<false>(n, p, nd, sh); }
extern "C" int LinearAttentionBwd(AOT_ARGS) { return linear_attention_bwd<false>(n, p, nd, sh); }
extern "C" int LinearAttentionFwd_bf16(AOT_ARGS) { return linear_attention_fwd<true>(n, p, nd, sh); }
extern "C" int LinearAttentionBwd_bf16(AOT_ARGS) { return linear_attention_bwd<true>(n, p, nd, sh); }

// ---------------------------------------------------------------------------------------------
// Dense layer on (m, in) rows: y = x . w^T + bias: the U-Net's time-embedding projections, where
// MindSpore's MatMul costs more in overhead than in arithmetic, and every linear layer of the DiT.
static constexpr int64_t kSmallGemm = 1 << 16;  // multiply-adds below which plain loops win

template <bool BF>
static int dense_fwd(int nparam, void **params, int *ndims, int64_t **shapes) {
  if (nparam != 4 || ndims[0] != 2) return 1;
  const float *x = (const float *)params[0], *w = (const float *)params[1], *bias = (const float *)params[2];
  float *y = (float *)params[3];
  int64_t m = shapes[0][0], in = shapes[0][1], o = shapes[1][0];
  if (BF || m * in * o > kSmallGemm) {  // MindSpore's dnnl_sgemm runs on one thread: split the rows
    int failed = 0;
#pragma omp parallel num_threads(kThreads()) reduction(| : failed)
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      const int64_t r0 = m * t / nt, r1 = m * (t + 1) / nt;
      for (int64_t i = r0; i < r1; ++i) std::memcpy(y + i * o, bias, sizeof(float) * o);
      if (r1 > r0) failed |= !gemm<BF>('N', 'T', r1 - r0, o, in, 1.f, x + r0 * in, in, w, in, 1.f, y + r0 * o, o);
    }
    return failed ? 7 : 0;
  }
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < o; ++j) {
      const float *xr = x + i * in, *wr = w + j * in;
      float acc = 0.f;
#pragma omp simd reduction(+ : acc)
      for (int64_t k = 0; k < in; ++k) acc += xr[k] * wr[k];
      y[i * o + j] = acc + bias[j];
    }
  return 0;
}

// inputs: x (m, in), w (o, in), dy (m, o); outputs dx (m, in), dw (o, in), dbias (o)
template <bool BF>
static int dense_bwd(int nparam, void **params, int *ndims, int64_t **shapes) {
  if (nparam != 6) return 1;
  const float *x = (const float *)params[0], *w = (const float *)params[1], *dy = (const float *)params[2];
  float *dx = (float *)params[3], *dw = (float *)params[4], *db = (float *)params[5];
  int64_t m = shapes[0][0], in = shapes[0][1], o = shapes[1][0];
  if (BF || m * in * o > kSmallGemm) {  // each thread: a share of dx's rows and of dw's rows
    int failed = 0;
#pragma omp parallel num_threads(kThreads()) reduction(| : failed)
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      const int64_t r0 = m * t / nt, r1 = m * (t + 1) / nt, o0 = o * t / nt, o1 = o * (t + 1) / nt;
      if (r1 > r0) failed |= !gemm<BF>('N', 'N', r1 - r0, in, o, 1.f, dy + r0 * o, o, w, in, 0.f, dx + r0 * in, in);
      if (o1 > o0) failed |= !gemm<BF>('T', 'N', o1 - o0, in, m, 1.f, dy + o0, o, x, in, 0.f, dw + o0 * in, in);
    }
    if (failed) return 7;
  } else {  // rows of w and x are contiguous, so the inner loops vectorise
    std::fill(dx, dx + m * in, 0.f);
    std::fill(dw, dw + o * in, 0.f);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < o; ++j) {
        const float g = dy[i * o + j];
        const float *wr = w + j * in, *xr = x + i * in;
        float *dxr = dx + i * in, *dwr = dw + j * in;
#pragma omp simd
        for (int64_t k = 0; k < in; ++k) { dxr[k] += g * wr[k]; dwr[k] += g * xr[k]; }
      }
  }
  for (int64_t j = 0; j < o; ++j) db[j] = 0.f;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < o; ++j) db[j] += dy[i * o + j];
  return 0;
}

extern "C" int DenseFwd(AOT_ARGS) { return dense_fwd<false>(n, p, nd, sh); }
extern "C" int DenseBwd(AOT_ARGS) { return dense_bwd<false>(n, p, nd, sh); }
extern "C" int DenseFwd_bf16(AOT_ARGS) { return dense_fwd<true>(n, p, nd, sh); }
extern "C" int DenseBwd_bf16(AOT_ARGS) { return dense_bwd<true>(n, p, nd, sh); }

// ---------------------------------------------------------------------------------------------
// The transformer's ops (DiT): MindSpore's CPU GeLU is slow, LayerNorm followed by the adaptive
// scale and shift is several graph ops each way, and multi-head attention is slices, transposes,
// two batched products and a softmax.

// GELU, tanh approximation: 0.5 x (1 + tanh(c (x + a x^3))).
static constexpr float kGeluC = 0.7978845608028654f, kGeluA = 0.044715f;

// tanh as a rational function of degree 13/6 on [-9, 9] (Eigen's float tanh): std::tanh is a
// library call the compiler cannot vectorise, this is a few multiplies.
static inline float fast_tanh(float x) {
  x = x < -9.f ? -9.f : x;  // ternaries: std::min/max return references and break vectorisation
  x = x > 9.f ? 9.f : x;
  const float x2 = x * x;
  float p = -2.76076847742355e-16f;
  p = p * x2 + 2.00018790482477e-13f;
  p = p * x2 - 8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  float q = 1.19825839466702e-06f;
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  return x * p / q;
}

static int gelu_fwd(int nparam, void **params, int *ndims, int64_t **shapes) {
  if (nparam != 2) return 1;
  const float *x = (const float *)params[0]; float *y = (float *)params[1];
  int64_t total = 1;
  for (int i = 0; i < ndims[0]; ++i) total *= shapes[0][i];
#pragma omp parallel for simd num_threads(kThreads()) schedule(static)
  for (int64_t i = 0; i < total; ++i) {
    const float v = x[i];
    y[i] = 0.5f * v * (1.f + fast_tanh(kGeluC * (v + kGeluA * v * v * v)));
  }
  return 0;
}

// inputs: x, dy; output dx
static int gelu_bwd(int nparam, void **params, int *ndims, int64_t **shapes) {
  if (nparam != 3) return 1;
  const float *x = (const float *)params[0], *dy = (const float *)params[1]; float *dx = (float *)params[2];
  int64_t total = 1;
  for (int i = 0; i < ndims[0]; ++i) total *= shapes[0][i];
#pragma omp parallel for simd num_threads(kThreads()) schedule(static)
  for (int64_t i = 0; i < total; ++i) {
    const float v = x[i], th = fast_tanh(kGeluC * (v + kGeluA * v * v * v));
    dx[i] = dy[i] * (0.5f * (1.f + th) + 0.5f * v * (1.f - th * th) * kGeluC * (1.f + 3.f * kGeluA * v * v));
  }
  return 0;
}

extern "C" int GeluTanhFwd(AOT_ARGS) { return gelu_fwd(n, p, nd, sh); }
extern "C" int GeluTanhBwd(AOT_ARGS) { return gelu_bwd(n, p, nd, sh); }

// LayerNorm over the last axis (no affine), then y = xhat * (1 + scale[b]) + shift[b].
// Forward inputs: x (b, n, d), shift (b, d), scale (b, d); outputs: y, mean (b, n), rstd (b, n).
template <int EPS>
static int ln_mod_fwd(int nparam, void **params, int *ndims, int64_t **shapes) {
  if (nparam != 6 || ndims[0] != 3) return 1;
  const float *x = (const float *)params[0], *shift = (const float *)params[1], *scale = (const float *)params[2];
  float *y = (float *)params[3], *mean = (float *)params[4], *rstd = (float *)params[5];
  const int64_t b = shapes[0][0], n = shapes[0][1], d = shapes[0][2];
  const float eps = EPS == 6 ? 1e-6f : 1e-5f;
#pragma omp parallel for num_threads(kThreads()) schedule(static)
  for (int64_t r = 0; r < b * n; ++r) {
    const float *xs = x + r * d, *sh = shift + (r / n) * d, *sc = scale + (r / n) * d;
    float *ys = y + r * d;
    group_stats(xs, d, eps, mean + r, rstd + r);
    const float m = mean[r], s = rstd[r];
#pragma omp simd
    for (int64_t j = 0; j < d; ++j) ys[j] = (xs[j] - m) * s * (1.f + sc[j]) + sh[j];
  }
  return 0;
}

// inputs: dy, x, mean, rstd, scale; outputs: dx (b, n, d), dshift (b, d), dscale (b, d)
static int ln_mod_bwd(int nparam, void **params, int *ndims, int64_t **shapes) {
  if (nparam != 8 || ndims[1] != 3) return 1;
  const float *dy = (const float *)params[0], *x = (const float *)params[1], *mean = (const float *)params[2];
  const float *rstd = (const float *)params[3], *scale = (const float *)params[4];
  float *dx = (float *)params[5], *dshift = (float *)params[6], *dscale = (float *)params[7];
  const int64_t b = shapes[1][0], n = shapes[1][1], d = shapes[1][2];
#pragma omp parallel num_threads(kThreads())
  {
    std::vector<float> g((size_t)d);
#pragma omp for schedule(static)
    for (int64_t bi = 0; bi < b; ++bi) {
      float *dsh = dshift + bi * d, *dsc = dscale + bi * d;
      const float *sc = scale + bi * d;
      std::fill(dsh, dsh + d, 0.f);
      std::fill(dsc, dsc + d, 0.f);
      for (int64_t i = 0; i < n; ++i) {
        const int64_t r = bi * n + i;
        const float *xs = x + r * d, *ds = dy + r * d;
        float *dxs = dx + r * d;
        const float m = mean[r], s = rstd[r];
        float sg = 0.f, sgx = 0.f;
#pragma omp simd reduction(+ : sg, sgx)
        for (int64_t j = 0; j < d; ++j) {
          const float xh = (xs[j] - m) * s;
          dsh[j] += ds[j];
          dsc[j] += ds[j] * xh;
          g[j] = ds[j] * (1.f + sc[j]);
          sg += g[j];
          sgx += g[j] * xh;
        }
        const float mg = sg / d, mgx = sgx / d;
#pragma omp simd
        for (int64_t j = 0; j < d; ++j) dxs[j] = s * (g[j] - mg - (xs[j] - m) * s * mgx);
      }
    }
  }
  return 0;
}

extern "C" int LayerNormModFwd_eps6(AOT_ARGS) { return ln_mod_fwd<6>(n, p, nd, sh); }
extern "C" int LayerNormModFwd_eps5(AOT_ARGS) { return ln_mod_fwd<5>(n, p, nd, sh); }
extern "C" int LayerNormModBwd(AOT_ARGS) { return ln_mod_bwd(n, p, nd, sh); }

// Multi-head self-attention on packed projections. Forward input: qkv (b, n, 3, heads, dh), the
// output of one linear layer; outputs: out (b, n, heads, dh) = softmax(q k^T / sqrt(dh)) v per
// head, and the attention probabilities p (b, heads, n, n) for the backward pass. Heads are read
// in place through the row stride, so nothing is sliced or transposed.
static void softmax_rows(float *s, int64_t rows, int64_t cols) {
  for (int64_t i = 0; i < rows; ++i) softmax_row(s + i * cols, s + i * cols, cols);
}

static int attention_fwd(int nparam, void **params, int *ndims, int64_t **shapes) {
  if (nparam != 3 || ndims[0] != 5) return 1;
  const float *qkv = (const float *)params[0];
  float *out = (float *)params[1], *prob = (float *)params[2];
  const int64_t b = shapes[0][0], n = shapes[0][1], heads = shapes[0][3], dh = shapes[0][4];
  const int64_t d = heads * dh, ld = 3 * d;
  const float scale = 1.f / std::sqrt((float)dh);
#pragma omp parallel for num_threads(kThreads()) schedule(static)
  for (int64_t bh = 0; bh < b * heads; ++bh) {
    const int64_t bi = bh / heads, h = bh % heads;
    const float *q = qkv + bi * n * ld + h * dh, *k = q + d, *v = q + 2 * d;
    float *p = prob + bh * n * n;
    dnnl_sgemm('N', 'T', n, n, dh, scale, q, ld, k, ld, 0.f, p, n);
    softmax_rows(p, n, n);
    dnnl_sgemm('N', 'N', n, dh, n, 1.f, p, n, v, ld, 0.f, out + bi * n * d + h * dh, d);
  }
  return 0;
}

// inputs: dout (b, n, heads, dh), qkv, p; output dqkv (b, n, 3, heads, dh)
static int attention_bwd(int nparam, void **params, int *ndims, int64_t **shapes) {
  if (nparam != 4 || ndims[1] != 5) return 1;
  const float *dout = (const float *)params[0], *qkv = (const float *)params[1], *prob = (const float *)params[2];
  float *dqkv = (float *)params[3];
  const int64_t b = shapes[1][0], n = shapes[1][1], heads = shapes[1][3], dh = shapes[1][4];
  const int64_t d = heads * dh, ld = 3 * d;
  const float scale = 1.f / std::sqrt((float)dh);
#pragma omp parallel num_threads(kThreads())
  {
    std::vector<float> ds((size_t)(n * n));
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < b * heads; ++bh) {
      const int64_t bi = bh / heads, h = bh % heads, off = bi * n * ld + h * dh;
      const float *q = qkv + off, *k = q + d, *v = q + 2 * d, *p = prob + bh * n * n;
      const float *go = dout + bi * n * d + h * dh;
      float *dq = dqkv + off, *dk = dq + d, *dv = dq + 2 * d;
      dnnl_sgemm('T', 'N', n, dh, n, 1.f, p, n, go, d, 0.f, dv, ld);          // dv = p^T dout
      dnnl_sgemm('N', 'T', n, n, dh, 1.f, go, d, v, ld, 0.f, ds.data(), n);   // dp = dout v^T
      for (int64_t i = 0; i < n; ++i) {                                        // ds = p (dp - sum(dp p))
        const float *pr = p + i * n; float *dr = ds.data() + i * n, dot = 0.f;
#pragma omp simd reduction(+ : dot)
        for (int64_t j = 0; j < n; ++j) dot += pr[j] * dr[j];
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) dr[j] = pr[j] * (dr[j] - dot);
      }
      dnnl_sgemm('N', 'N', n, dh, n, scale, ds.data(), n, k, ld, 0.f, dq, ld);  // dq = s ds k
      dnnl_sgemm('T', 'N', n, dh, n, scale, ds.data(), n, q, ld, 0.f, dk, ld);  // dk = s ds^T q
    }
  }
  return 0;
}

extern "C" int AttentionFwd(AOT_ARGS) { return attention_fwd(n, p, nd, sh); }
extern "C" int AttentionBwd(AOT_ARGS) { return attention_bwd(n, p, nd, sh); }

// Gated residual: out = x + gate[b] * y for x, y (b, n, d) and gate (b, d). Backward inputs: dout,
// gate, y; outputs: dy = gate * dout, dgate = sum over n of dout * y (dx is dout itself).
static int gated_add_fwd(int nparam, void **params, int *ndims, int64_t **shapes) {
  if (nparam != 4 || ndims[0] != 3) return 1;
  const float *x = (const float *)params[0], *gate = (const float *)params[1], *y = (const float *)params[2];
  float *out = (float *)params[3];
  const int64_t b = shapes[0][0], n = shapes[0][1], d = shapes[0][2];
#pragma omp parallel for num_threads(kThreads()) schedule(static)
  for (int64_t r = 0; r < b * n; ++r) {
    const float *g = gate + (r / n) * d, *xs = x + r * d, *ys = y + r * d;
    float *os = out + r * d;
#pragma omp simd
    for (int64_t j = 0; j < d; ++j) os[j] = xs[j] + g[j] * ys[j];
  }
  return 0;
}

static int gated_add_bwd(int nparam, void **params, int *ndims, int64_t **shapes) {
  if (nparam != 5 || ndims[0] != 3) return 1;
  const float *dout = (const float *)params[0], *gate = (const float *)params[1], *y = (const float *)params[2];
  float *dy = (float *)params[3], *dgate = (float *)params[4];
  const int64_t b = shapes[0][0], n = shapes[0][1], d = shapes[0][2];
#pragma omp parallel for num_threads(kThreads()) schedule(static)
  for (int64_t bi = 0; bi < b; ++bi) {
    const float *g = gate + bi * d;
    float *dg = dgate + bi * d;
    std::fill(dg, dg + d, 0.f);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t off = (bi * n + i) * d;
#pragma omp simd
      for (int64_t j = 0; j < d; ++j) { dy[off + j] = g[j] * dout[off + j]; dg[j] += dout[off + j] * y[off + j]; }
    }
  }
  return 0;
}

extern "C" int GatedAddFwd(AOT_ARGS) { return gated_add_fwd(n, p, nd, sh); }
extern "C" int GatedAddBwd(AOT_ARGS) { return gated_add_bwd(n, p, nd, sh); }
