// CPU kernels of TVConv's core op: a depthwise convolution with a different k x k kernel at
// every output pixel (see tvconv/ops.py for the definition and tvconv/kernels.py for the build).
//
//   out[n, c, y, x] = sum_{i,j} w[c, i, j, y, x] * in[n, c, s*y + i - p, s*x + j - p] (+ b[c, y, x])
//
// Layouts: activations channels-last (N, H, W, C in memory), weights packed as (H, k, k, W, C).
// Then, for one output row and one tap, the output, weight and (at stride 1) input elements form
// one contiguous run of (columns x channels) values: the inner loop is long, branch-free and
// vectorises for any channel count and width. Zero padding p = (k - 1) / 2 is never
// materialised: each tap's valid column range is computed once per row. Work is split over rows
// so that no two threads write the same memory (the input gradient gathers per input row, the
// weight gradient reduces over the batch per weight row). The forward's fused 3x3 pass takes
// four images per weight load and writes its output instead of adding to a zero-filled one;
// both keep every output value's expression, so results are bit for bit those of one image at
// a time. The forward reads NCHW inputs in place, transposing rows into a per-thread ring in
// cache as they are needed (8 x 8 register tiles for float); the gradients take channels-last
// copies, transposed in the same tiles.

#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#ifdef __AVX__
#include <immintrin.h>
#endif

namespace {

struct Geometry {
  int64_t batch, channels, in_h, in_w, out_h, out_w, k, stride, pad;
};

// input: (N, C, H_in, W_in) logical; packed weight: (H, k, k, W, C).
Geometry geometry(at::IntArrayRef input, at::IntArrayRef packed, int64_t stride) {
  return {input[0], input[1], input[2], input[3], packed[0], packed[3], packed[1], stride,
          (packed[1] - 1) / 2};
}

void check(at::IntArrayRef input, at::IntArrayRef packed, int64_t stride) {
  TORCH_CHECK(input.size() == 4 && packed.size() == 5,
              "input (N, C, H, W) and packed weight (H, k, k, W, C) expected");
  TORCH_CHECK(packed[1] == packed[2] && packed[1] % 2 == 1, "kernel must be k x k with odd k");
  TORCH_CHECK(packed[4] == input[1], "weight channels differ from the input's");
  TORCH_CHECK(stride >= 1, "stride must be >= 1");
  const int64_t k = packed[1], pad = (k - 1) / 2;
  TORCH_CHECK((input[2] + 2 * pad - k) / stride + 1 == packed[0] &&
                  (input[3] + 2 * pad - k) / stride + 1 == packed[3],
              "the weight's (H, W) must be the output size of the input");
}

// Output columns [lo, hi) whose input column s*x + offset lies in [0, in_w).
inline void column_range(const Geometry& g, int64_t offset, int64_t& lo, int64_t& hi) {
  lo = offset >= 0 ? 0 : (-offset + g.stride - 1) / g.stride;
  const int64_t last = g.in_w - 1 - offset;
  hi = last < 0 ? 0 : std::min(g.out_w, last / g.stride + 1);
}

// a[q] += b[q] * c[q]: one tap's run (at stride 1 all its (hi - lo) * C values, else one column).
template <typename scalar_t>
inline void multiply_add(scalar_t* __restrict__ a, const scalar_t* __restrict__ b,
                         const scalar_t* __restrict__ c, int64_t count) {
  for (int64_t q = 0; q < count; ++q) a[q] += b[q] * c[q];
}

// dst[p * C + c] = src[c * channel_stride + p] over channels [c0, c1) and pixels [p0, p1),
// p innermost: contiguous loads, strided stores (a c-innermost loop is vectorised into
// gathers, which were 5-10x slower here).
template <typename scalar_t>
void transpose_scalar(const scalar_t* src, int64_t channel_stride, scalar_t* dst, int64_t C,
                      int64_t c0, int64_t c1, int64_t p0, int64_t p1) {
  for (int64_t c = c0; c < c1; ++c) {
    for (int64_t p = p0; p < p1; ++p) dst[p * C + c] = src[c * channel_stride + p];
  }
}

// The same for all C channels of a run of `pixels` pixels: C channel planes made channels-last.
// Float goes through 8 x 8 tiles transposed in AVX registers (contiguous loads and stores), the
// scalar loop takes the rest. Copies values only, so the layout never changes a result.
template <typename scalar_t>
void transpose_pixels(const scalar_t* src, int64_t channel_stride, scalar_t* dst, int64_t C,
                      int64_t pixels) {
  transpose_scalar(src, channel_stride, dst, C, 0, C, 0, pixels);
}

#ifdef __AVX__
inline void transpose_8x8(const float* src, int64_t src_stride, float* dst, int64_t dst_stride) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * src_stride);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    _mm256_storeu_ps(dst + i * dst_stride, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
    _mm256_storeu_ps(dst + (i + 4) * dst_stride, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
  }
}

template <>
void transpose_pixels<float>(const float* src, int64_t channel_stride, float* dst, int64_t C,
                             int64_t pixels) {
  const int64_t c8 = C / 8 * 8, p8 = pixels / 8 * 8;
  for (int64_t p = 0; p < p8; p += 8) {
    for (int64_t c = 0; c < c8; c += 8) {
      transpose_8x8(src + c * channel_stride + p, channel_stride, dst + p * C + c, C);
    }
  }
  transpose_scalar(src, channel_stride, dst, C, c8, C, 0, pixels);  // the last C % 8 channels
  transpose_scalar(src, channel_stride, dst, C, 0, c8, p8, pixels);  // the last pixels % 8
}
#endif

// Up to this many images of one output row go through the fused 3x3 pass together: each of the
// row's nine weights is loaded once and used for every image of the block (the weights differ
// per pixel, so unlike a depthwise conv's they cannot stay in registers across a row).
constexpr int64_t kBlock = 4;

// Where the images of a block read and write, for one output row. The fused pass writes the
// output (the bias row `init` plus the taps' sum, or the sum alone) instead of adding to a
// zero-filled one: the same values, one pass less over the output.
template <typename scalar_t>
struct RowBlock {
  scalar_t* out[kBlock];
  const scalar_t* above[kBlock];   // input rows of taps i = 0, 1, 2, at the first fused column
  const scalar_t* middle[kBlock];
  const scalar_t* below[kBlock];
  const scalar_t* init;            // bias row at the first fused column (HasBias)
};

// The common case, k = 3 at stride 1, for an output row whose three input rows all exist: over
// the interior columns [1, W - 1) all nine taps are summed in one pass, so the output is loaded
// and stored once instead of nine times. `w` points at the row's first weight run (tap (0, 0),
// column 1); runs of consecutive taps are `step` apart. Each output value is the same
// expression as for one image alone, so blocking changes no rounding.
template <typename scalar_t, int64_t NB, bool HasBias>
void fused_3x3_rows(const RowBlock<scalar_t>& rows, const scalar_t* __restrict__ w, int64_t step,
                    int64_t C, int64_t count) {
  const scalar_t *w00 = w, *w01 = w + step, *w02 = w + 2 * step;
  const scalar_t *w10 = w + 3 * step, *w11 = w + 4 * step, *w12 = w + 5 * step;
  const scalar_t *w20 = w + 6 * step, *w21 = w + 7 * step, *w22 = w + 8 * step;
#pragma omp simd
  for (int64_t q = 0; q < count; ++q) {
    const scalar_t v00 = w00[q], v01 = w01[q], v02 = w02[q], v10 = w10[q], v11 = w11[q],
                   v12 = w12[q], v20 = w20[q], v21 = w21[q], v22 = w22[q];
    for (int64_t b = 0; b < NB; ++b) {
      const scalar_t *a = rows.above[b] + q, *m = rows.middle[b] + q, *d = rows.below[b] + q;
      const scalar_t sum = v00 * a[-C] + v01 * a[0] + v02 * a[C] + v10 * m[-C] + v11 * m[0] +
                           v12 * m[C] + v20 * d[-C] + v21 * d[0] + v22 * d[C];
      rows.out[b][q] = HasBias ? rows.init[q] + sum : sum;
    }
  }
}

// The same at stride 2: per interior output column, its C channels summed over the nine taps,
// the input columns two apart.
template <typename scalar_t, int64_t NB, bool HasBias>
void fused_3x3_rows_stride2(const RowBlock<scalar_t>& rows, const scalar_t* __restrict__ w,
                            int64_t step, int64_t C, int64_t columns) {
  for (int64_t x = 0; x < columns; ++x) {
    const scalar_t* __restrict__ wx = w + x * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const scalar_t v00 = wx[c], v01 = wx[step + c], v02 = wx[2 * step + c],
                     v10 = wx[3 * step + c], v11 = wx[4 * step + c], v12 = wx[5 * step + c],
                     v20 = wx[6 * step + c], v21 = wx[7 * step + c], v22 = wx[8 * step + c];
      for (int64_t b = 0; b < NB; ++b) {
        const int64_t at = 2 * x * C + c;
        const scalar_t *a = rows.above[b] + at, *m = rows.middle[b] + at, *d = rows.below[b] + at;
        const scalar_t sum = v00 * a[-C] + v01 * a[0] + v02 * a[C] + v10 * m[-C] +
                             v11 * m[0] + v12 * m[C] + v20 * d[-C] + v21 * d[0] + v22 * d[C];
        rows.out[b][x * C + c] = HasBias ? rows.init[x * C + c] + sum : sum;
      }
    }
  }
}

template <typename scalar_t, int64_t NB>
void fused_block(const RowBlock<scalar_t>& rows, const scalar_t* w, int64_t step, int64_t C,
                 int64_t stride, int64_t columns) {
  if (stride == 1 && rows.init != nullptr) {
    fused_3x3_rows<scalar_t, NB, true>(rows, w, step, C, columns * C);
  } else if (stride == 1) {
    fused_3x3_rows<scalar_t, NB, false>(rows, w, step, C, columns * C);
  } else if (rows.init != nullptr) {
    fused_3x3_rows_stride2<scalar_t, NB, true>(rows, w, step, C, columns);
  } else {
    fused_3x3_rows_stride2<scalar_t, NB, false>(rows, w, step, C, columns);
  }
}

// out[q] = bias[q] (or 0) over [lo, hi): the start of the columns the taps add to one by one.
template <typename scalar_t>
void initialise(scalar_t* out, const scalar_t* bias, int64_t lo, int64_t hi) {
  if (bias != nullptr) {
    std::copy(bias + lo, bias + hi, out + lo);
  } else {
    std::fill(out + lo, out + hi, scalar_t(0));
  }
}

// One output row y of images [first_image, first_image + images) (at most kBlock). `row(n, iy)`
// points at input row iy of image n, channels-last (W_in x C values); `bias`: (H, W, C) or
// nullptr; `out` need not be initialised.
template <typename scalar_t, typename InputRow>
void forward_row_block(const Geometry& g, int64_t y, int64_t first_image, int64_t images,
                       scalar_t* out, const scalar_t* packed, const scalar_t* bias,
                       const InputRow& row) {
  const int64_t C = g.channels, row_out = g.out_w * C;
  int64_t fused_lo = 0, fused_hi = 0;  // columns done by a fused 3x3 pass
  const int64_t centre = y * g.stride;  // input row of tap i = 1
  if (g.k == 3 && g.stride <= 2 && centre >= 1 && centre + 1 < g.in_h) {
    fused_lo = 1;  // columns whose three input columns all exist
    fused_hi = std::min(g.out_w, (g.in_w - 2) / g.stride + 1);
  }
  if (fused_hi > fused_lo) {
    RowBlock<scalar_t> rows{};
    rows.init = bias == nullptr ? nullptr : bias + y * row_out + fused_lo * C;
    const int64_t column = g.stride * fused_lo * C;
    for (int64_t b = 0; b < images; ++b) {
      const int64_t n = first_image + b;
      rows.out[b] = out + (n * g.out_h + y) * row_out + fused_lo * C;
      rows.above[b] = row(n, centre - 1) + column;
      rows.middle[b] = row(n, centre) + column;
      rows.below[b] = row(n, centre + 1) + column;
    }
    const scalar_t* w = packed + y * 9 * row_out + fused_lo * C;
    const int64_t columns = fused_hi - fused_lo;
    switch (images) {
      case 4: fused_block<scalar_t, 4>(rows, w, row_out, C, g.stride, columns); break;
      case 3: fused_block<scalar_t, 3>(rows, w, row_out, C, g.stride, columns); break;
      case 2: fused_block<scalar_t, 2>(rows, w, row_out, C, g.stride, columns); break;
      default: fused_block<scalar_t, 1>(rows, w, row_out, C, g.stride, columns);
    }
  } else {
    fused_lo = fused_hi = 0;
  }
  const scalar_t* bias_row = bias == nullptr ? nullptr : bias + y * row_out;
  for (int64_t n = first_image; n < first_image + images; ++n) {
    scalar_t* out_row = out + (n * g.out_h + y) * row_out;
    initialise(out_row, bias_row, 0, fused_hi > fused_lo ? fused_lo * C : row_out);
    if (fused_hi > fused_lo) initialise(out_row, bias_row, fused_hi * C, row_out);
    for (int64_t i = 0; i < g.k; ++i) {
      const int64_t iy = y * g.stride + i - g.pad;
      if (iy < 0 || iy >= g.in_h) continue;
      const scalar_t* in_row = row(n, iy);
      for (int64_t j = 0; j < g.k; ++j) {
        const int64_t offset = j - g.pad;
        int64_t lo, hi;
        column_range(g, offset, lo, hi);
        if (hi <= lo) continue;
        const scalar_t* w_row = packed + ((y * g.k + i) * g.k + j) * row_out;
        if (g.stride == 1) {
          // the columns left of and right of the fused range (all of them when not fused)
          const int64_t left_hi = fused_hi > fused_lo ? std::min(hi, fused_lo) : hi;
          if (left_hi > lo) {
            multiply_add(out_row + lo * C, w_row + lo * C, in_row + (lo + offset) * C,
                         (left_hi - lo) * C);
          }
          const int64_t right_lo = std::max(lo, fused_hi);
          if (fused_hi > fused_lo && hi > right_lo) {
            multiply_add(out_row + right_lo * C, w_row + right_lo * C,
                         in_row + (right_lo + offset) * C, (hi - right_lo) * C);
          }
        } else {
          for (int64_t x = lo; x < hi; ++x) {
            if (x >= fused_lo && x < fused_hi) continue;
            multiply_add(out_row + x * C, w_row + x * C, in_row + (x * g.stride + offset) * C,
                         C);
          }
        }
      }
    }
  }
}

// Channels-last input: rows r = y * blocks + block, so a thread's consecutive rows share y and
// the row's k*k weight runs stay in cache across the batch instead of being streamed again for
// every image.
template <typename scalar_t>
void forward_rows(const Geometry& g, scalar_t* out, const scalar_t* packed, const scalar_t* in,
                  const scalar_t* bias) {
  const int64_t row_in = g.in_w * g.channels;
  const int64_t blocks = (g.batch + kBlock - 1) / kBlock;
  const auto row = [&](int64_t n, int64_t iy) { return in + (n * g.in_h + iy) * row_in; };
  at::parallel_for(0, blocks * g.out_h, 1, [&](int64_t first, int64_t last) {
    for (int64_t r = first; r < last; ++r) {
      const int64_t y = r / blocks, first_image = (r % blocks) * kBlock;
      const int64_t images = std::min(kBlock, g.batch - first_image);
      forward_row_block(g, y, first_image, images, out, packed, bias, row);
    }
  });
}

// An NCHW input's rows, transposed to channels-last as the output rows need them, into a ring of
// rows per image for a group of images: each input row is transposed once (twice where two
// threads' row ranges meet) into cache, where a full channels-last copy would be written to
// and read back from memory, and allocated (page faults) per call. Rows are fetched kAhead at a
// time per image, so each channel plane is read in runs of kAhead rows, not one short row.
constexpr int64_t kRingBytes = 512 << 10;
constexpr int64_t kAhead = 4;

template <typename scalar_t>
void forward_rows_nchw(const Geometry& g, scalar_t* out, const scalar_t* packed,
                       const scalar_t* in, const scalar_t* bias) {
  const int64_t C = g.channels, row_in = g.in_w * C, plane = g.in_h * g.in_w;
  const int64_t slots = g.k + kAhead;  // > the rows between a window's top and the rows ahead
  const int64_t per_image = slots * row_in * static_cast<int64_t>(sizeof(scalar_t));
  const int64_t group =
      std::min(g.batch, std::max<int64_t>(kBlock, kRingBytes / per_image / kBlock * kBlock));
  const int64_t groups = (g.batch + group - 1) / group;
  // r = group index * out_h + y: a thread walks consecutive output rows of one group of images
  // (its ring kept from row to row), and every thread has work even when out_h is small
  at::parallel_for(0, groups * g.out_h, 1, [&](int64_t r_first, int64_t r_last) {
    std::vector<scalar_t> ring(slots * group * row_in);
    int64_t first = -1, filled = 0;  // the ring's images [first, ..), input rows [.., filled)
    for (int64_t r = r_first; r < r_last; ++r) {
      const int64_t y = r % g.out_h;
      if (r / g.out_h * group != first) {
        first = r / g.out_h * group;
        filled = 0;
      }
      const int64_t images = std::min(group, g.batch - first);
      const auto row = [&](int64_t n, int64_t iy) {
        return ring.data() + ((iy % slots) * group + n - first) * row_in;
      };
      const int64_t top = std::max<int64_t>(0, y * g.stride - g.pad);
      const int64_t bottom = std::min(g.in_h, y * g.stride + g.pad + 1);
      if (bottom > filled) {
        const int64_t from = std::max(top, filled);
        filled = std::min(g.in_h, std::max(bottom, from + kAhead));
        for (int64_t n = first; n < first + images; ++n) {
          for (int64_t iy = from; iy < filled; ++iy) {
            transpose_pixels(in + n * C * plane + iy * g.in_w, plane, row(n, iy), C, g.in_w);
          }
        }
      }
      for (int64_t b = first; b < first + images; b += kBlock) {
        forward_row_block(g, y, b, std::min(kBlock, first + images - b), out, packed, bias, row);
      }
    }
  });
}

template <typename scalar_t>
void input_grad_rows(const Geometry& g, scalar_t* grad_in, const scalar_t* packed,
                     const scalar_t* grad_out) {
  const int64_t C = g.channels, row_out = g.out_w * C, row_in = g.in_w * C;
  at::parallel_for(0, g.batch * g.in_h, 1, [&](int64_t first, int64_t last) {
    for (int64_t r = first; r < last; ++r) {
      const int64_t iy = r / g.batch, n = r % g.batch;  // weight reuse, as in the forward
      scalar_t* grad_row = grad_in + (n * g.in_h + iy) * row_in;
      for (int64_t i = 0; i < g.k; ++i) {
        const int64_t t = iy + g.pad - i;  // = stride * y for the output row y that reads iy
        if (t < 0 || t % g.stride != 0 || t / g.stride >= g.out_h) continue;
        const int64_t y = t / g.stride;
        const scalar_t* go_row = grad_out + (n * g.out_h + y) * row_out;
        for (int64_t j = 0; j < g.k; ++j) {
          const int64_t offset = j - g.pad;
          int64_t lo, hi;
          column_range(g, offset, lo, hi);
          if (hi <= lo) continue;
          const scalar_t* w_row = packed + ((y * g.k + i) * g.k + j) * row_out;
          if (g.stride == 1) {
            multiply_add(grad_row + (lo + offset) * C, w_row + lo * C, go_row + lo * C,
                         (hi - lo) * C);
          } else {
            for (int64_t x = lo; x < hi; ++x) {
              multiply_add(grad_row + (x * g.stride + offset) * C, w_row + x * C,
                           go_row + x * C, C);
            }
          }
        }
      }
    }
  });
}

template <typename scalar_t>
void weight_grad_rows(const Geometry& g, scalar_t* grad_packed, const scalar_t* in,
                      const scalar_t* grad_out) {
  const int64_t C = g.channels, row_out = g.out_w * C, row_in = g.in_w * C;
  at::parallel_for(0, g.out_h * g.k, 1, [&](int64_t first, int64_t last) {
    for (int64_t r = first; r < last; ++r) {
      const int64_t y = r / g.k, i = r % g.k;
      const int64_t iy = y * g.stride + i - g.pad;
      if (iy < 0 || iy >= g.in_h) continue;
      for (int64_t j = 0; j < g.k; ++j) {
        const int64_t offset = j - g.pad;
        int64_t lo, hi;
        column_range(g, offset, lo, hi);
        if (hi <= lo) continue;
        scalar_t* gw_row = grad_packed + ((y * g.k + i) * g.k + j) * row_out;
        for (int64_t n = 0; n < g.batch; ++n) {
          const scalar_t* go_row = grad_out + (n * g.out_h + y) * row_out;
          const scalar_t* in_row = in + (n * g.in_h + iy) * row_in;
          if (g.stride == 1) {
            multiply_add(gw_row + lo * C, go_row + lo * C, in_row + (lo + offset) * C,
                         (hi - lo) * C);
          } else {
            for (int64_t x = lo; x < hi; ++x) {
              multiply_add(gw_row + x * C, go_row + x * C,
                           in_row + (x * g.stride + offset) * C, C);
            }
          }
        }
      }
    }
  });
}

// (N, C, P) -> (N, P, C) for contiguous NCHW activations (P = H * W pixels), in tiles of
// kPixels pixels: the general strided copy behind Tensor.contiguous(ChannelsLast) took most of a
// layer's time.
template <typename scalar_t>
void transpose_to_channels_last(const scalar_t* src, scalar_t* dst, int64_t N, int64_t C,
                                int64_t P) {
  constexpr int64_t kPixels = 64;
  const int64_t tiles = (P + kPixels - 1) / kPixels;
  at::parallel_for(0, N * tiles, 1, [&](int64_t first, int64_t last) {
    for (int64_t t = first; t < last; ++t) {
      const int64_t n = t / tiles, p0 = (t % tiles) * kPixels;
      transpose_pixels(src + n * C * P + p0, P, dst + (n * P + p0) * C, C,
                       std::min(kPixels, P - p0));
    }
  });
}

// A contiguous (N, C, H, W) tensor that is not also channels-last (as C = 1 or H = W = 1 are).
bool is_nchw(const at::Tensor& t) {
  return t.dim() == 4 && t.is_contiguous() && !t.is_contiguous(at::MemoryFormat::ChannelsLast);
}

at::Tensor channels_last(const at::Tensor& t) {
  if (!is_nchw(t)) return t.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor out = at::empty(t.sizes(), t.options(), at::MemoryFormat::ChannelsLast);
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "tvconv_channels_last", [&] {
    transpose_to_channels_last<scalar_t>(t.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
                                         t.size(0), t.size(1), t.size(2) * t.size(3));
  });
  return out;
}

void check_operands(const at::Tensor& a, const at::Tensor& b) {
  TORCH_CHECK(a.device().is_cpu() && b.device().is_cpu(), "CPU tensors expected");
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), "operand dtypes differ");
}

at::Tensor channels_last_copy(const at::Tensor& t) {
  TORCH_CHECK(t.device().is_cpu() && t.dim() == 4, "a CPU tensor (N, C, H, W) expected");
  return channels_last(t);
}

// (C, k, k, H, W) -> (H, k, k, W, C), contiguous.
at::Tensor pack_weight(const at::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 5, "weight (C, k, k, H, W) expected");
  return weight.permute({3, 1, 2, 4, 0}).contiguous();
}

at::Tensor forward(const at::Tensor& input_, const at::Tensor& packed_,
                   const c10::optional<at::Tensor>& bias, int64_t stride) {
  check_operands(input_, packed_);
  check(input_.sizes(), packed_.sizes(), stride);
  // NCHW inputs are read in place (rows transposed into cache as they are needed)
  const bool nchw = is_nchw(input_);
  const at::Tensor input = nchw ? input_ : channels_last(input_), packed = packed_.contiguous();
  const Geometry g = geometry(input.sizes(), packed.sizes(), stride);
  at::Tensor out = at::empty({g.batch, g.channels, g.out_h, g.out_w}, input.options(),
                             at::MemoryFormat::ChannelsLast);
  at::Tensor bias_hwc;  // (H, W, C), the output's channels-last order
  if (bias.has_value() && bias->defined()) {
    check_operands(input, *bias);
    TORCH_CHECK(bias->sizes() == at::IntArrayRef({g.channels, g.out_h, g.out_w}),
                "bias (C, H, W) of the output expected");
    bias_hwc = bias->permute({1, 2, 0}).contiguous();
  }
  if (out.numel() == 0) return out;  // nothing to compute (and no ring to size)
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "tvconv_forward", [&] {
    const auto rows = nchw ? forward_rows_nchw<scalar_t> : forward_rows<scalar_t>;
    rows(g, out.data_ptr<scalar_t>(), packed.data_ptr<scalar_t>(), input.data_ptr<scalar_t>(),
         bias_hwc.defined() ? bias_hwc.data_ptr<scalar_t>() : nullptr);
  });
  return out;
}

at::Tensor input_grad(const at::Tensor& grad_out_, const at::Tensor& packed_,
                      std::vector<int64_t> input_size, int64_t stride) {
  check_operands(grad_out_, packed_);
  check(input_size, packed_.sizes(), stride);
  const at::Tensor grad_out = channels_last(grad_out_), packed = packed_.contiguous();
  const Geometry g = geometry(input_size, packed.sizes(), stride);
  at::Tensor grad_in =
      at::empty(input_size, grad_out.options(), at::MemoryFormat::ChannelsLast).zero_();
  AT_DISPATCH_FLOATING_TYPES(grad_out.scalar_type(), "tvconv_input_grad", [&] {
    input_grad_rows<scalar_t>(g, grad_in.data_ptr<scalar_t>(), packed.data_ptr<scalar_t>(),
                              grad_out.data_ptr<scalar_t>());
  });
  return grad_in;
}

// Returns the gradient in the (C, k, k, H, W) layout of the unpacked weight (a permuted view).
at::Tensor weight_grad(const at::Tensor& grad_out_, const at::Tensor& input_,
                       std::vector<int64_t> packed_size, int64_t stride) {
  check_operands(grad_out_, input_);
  check(input_.sizes(), packed_size, stride);
  const at::Tensor grad_out = channels_last(grad_out_), input = channels_last(input_);
  const Geometry g = geometry(input.sizes(), packed_size, stride);
  at::Tensor grad_packed = at::zeros(packed_size, input.options());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "tvconv_weight_grad", [&] {
    weight_grad_rows<scalar_t>(g, grad_packed.data_ptr<scalar_t>(), input.data_ptr<scalar_t>(),
                               grad_out.data_ptr<scalar_t>());
  });
  return grad_packed.permute({4, 1, 2, 0, 3});
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("pack_weight", &pack_weight, "(C, k, k, H, W) -> the kernels' (H, k, k, W, C) layout");
  m.def("channels_last", &channels_last_copy, "a channels-last (N, C, H, W), tiled from NCHW");
  m.def("forward", &forward, "TVConv core op, forward (CPU, channels-last output)");
  m.def("input_grad", &input_grad, "gradient w.r.t. the input (CPU, channels-last)");
  m.def("weight_grad", &weight_grad, "gradient w.r.t. the (C, k, k, H, W) weight (CPU)");
}
