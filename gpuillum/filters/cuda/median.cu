// Hand-written because CuPy's median sorts every window (O(r^2 log r) per pixel, infeasible past r ~ 10); this exact histogram median costs O(r) per pixel at any radius.
// instantiations: median_hist_strips<unsigned char>; median_hist_strips<unsigned short>; median_hist_strips<unsigned int>
//
// Design. Pixel values are integer levels in [0, n_levels) (uint8/uint16 values, or float32 ranks).
// One warp owns one work item at a time: an output column x and a band of consecutive output rows.
// It counts the window of the band's first pixel into its histogram, then walks down the column:
// each step removes the top pixel and adds the new bottom pixel of every window column, 2(2r+1)
// updates spread over the 32 lanes. The window keeps only in-bounds pixels of `src` (padded modes
// pass a padded `src` and an output region inside it). The median, element n/2 of the sorted window,
// is found by a warp prefix scan over the coarse counts (2^shift levels per coarse bin), then over
// the fine counts of the chosen coarse bin. Coarse counts live in shared memory; fine counts too
// when they fit (fine_in_shared), otherwise in this warp's slice of `fine_global` (zeroed by the
// caller). Each work item removes its last window again, so the histograms are zero between items.

#define FULL_MASK 0xffffffffu

__device__ __forceinline__ int warp_sum(int value)
{
    for (int delta = 16; delta > 0; delta >>= 1) {
        value += __shfl_xor_sync(FULL_MASK, value, delta);
    }
    return value;
}

__device__ __forceinline__ int warp_inclusive_sum(int value, int lane)
{
    for (int delta = 1; delta < 32; delta <<= 1) {
        const int other = __shfl_up_sync(FULL_MASK, value, delta);
        if (lane >= delta) {
            value += other;
        }
    }
    return value;
}

// Bin holding element k (0-based) of the multiset counted by counts[0, n_bins); *below receives the
// number of elements in lower bins. Requires k < sum(counts). Every lane returns the same answer.
__device__ int find_rank(const volatile int* counts, int n_bins, int k, int lane, int* below)
{
    int before = 0;
    for (int base = 0; base < n_bins; base += 32) {
        const int bin = base + lane;
        const int count = bin < n_bins ? counts[bin] : 0;
        const int inclusive = warp_inclusive_sum(count, lane);
        const unsigned hit = __ballot_sync(FULL_MASK, before + inclusive > k);
        if (hit != 0u) {
            const int first = __ffs(hit) - 1;
            *below = before + __shfl_sync(FULL_MASK, inclusive - count, first);
            return base + first;
        }
        before += __shfl_sync(FULL_MASK, inclusive, 31);
    }
    *below = before;
    return n_bins - 1;
}

__device__ __forceinline__ void count_level(int* fine, int* coarse, unsigned int level, int shift, int delta)
{
    atomicAdd(fine + level, delta);
    atomicAdd(coarse + (level >> shift), delta);
}

// Add (delta = 1) or remove (delta = -1) every in-bounds pixel of the window centred at (cy, cx);
// returns the number of pixels, the same on every lane.
template <typename T>
__device__ int count_window(const T* __restrict__ src, int src_h, int src_w, const int* __restrict__ half,
                            int radius, int cy, int cx, int* fine, int* coarse, int shift, int delta, int lane)
{
    int n = 0;
    const int dy_lo = max(-radius, -cy);
    const int dy_hi = min(radius, src_h - 1 - cy);
    for (int dy = dy_lo; dy <= dy_hi; ++dy) {
        const int hw = half[dy + radius];
        const int col_lo = max(0, cx - hw);
        const int col_hi = min(src_w - 1, cx + hw);
        const T* row = src + (size_t)(cy + dy) * src_w;
        for (int col = col_lo + lane; col <= col_hi; col += 32) {
            count_level(fine, coarse, (unsigned int)row[col], shift, delta);
            ++n;
        }
    }
    return warp_sum(n);
}

template <typename T>
__global__ void median_hist_strips(const T* __restrict__ src, int src_h, int src_w,
                                   const int* __restrict__ half, int radius,
                                   int out_y0, int out_x0, int out_h, int out_w,
                                   int band_rows, int n_items, T* __restrict__ out, int* fine_global,
                                   int n_levels, int shift, int n_coarse, int fine_in_shared)
{
    extern __shared__ int shared_counts[];
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int warps_per_block = blockDim.x >> 5;
    const int warp_id = blockIdx.x * warps_per_block + warp;
    const int n_warps = gridDim.x * warps_per_block;
    const int per_warp = n_coarse + (fine_in_shared ? n_levels : 0);

    int* coarse = shared_counts + (size_t)warp * per_warp;
    int* fine = fine_in_shared ? coarse + n_coarse : fine_global + (size_t)warp_id * n_levels;
    for (int i = lane; i < per_warp; i += 32) {
        coarse[i] = 0;  // shared memory starts undefined; the global slice is zeroed by the caller
    }
    __syncwarp();

    for (int item = warp_id; item < n_items; item += n_warps) {
        const int x = item % out_w;
        const int y_start = (item / out_w) * band_rows;
        const int y_stop = min(out_h, y_start + band_rows);
        const int cx = out_x0 + x;
        const int dx_lo = max(-radius, -cx);
        const int dx_hi = min(radius, src_w - 1 - cx);

        int n = count_window(src, src_h, src_w, half, radius, out_y0 + y_start, cx, fine, coarse, shift, 1, lane);
        for (int y = y_start; y < y_stop; ++y) {
            const int cy = out_y0 + y;
            if (y > y_start) {  // slide one row down: each window column loses its top, gains a bottom
                int change = 0;
                for (int dx = dx_lo + lane; dx <= dx_hi; dx += 32) {
                    const int vh = half[dx + radius];
                    const int col = cx + dx;
                    const int top = cy - 1 - vh;
                    const int bottom = cy + vh;
                    if (top >= 0) {
                        count_level(fine, coarse, (unsigned int)src[(size_t)top * src_w + col], shift, -1);
                        --change;
                    }
                    if (bottom < src_h) {
                        count_level(fine, coarse, (unsigned int)src[(size_t)bottom * src_w + col], shift, 1);
                        ++change;
                    }
                }
                n += warp_sum(change);
            }
            __syncwarp();  // orders the lanes' histogram updates before the scans below

            const int k = n / 2;
            int below_coarse = 0;
            int below_fine = 0;
            const int coarse_bin = find_rank(coarse, n_coarse, k, lane, &below_coarse);
            const int first_level = coarse_bin << shift;
            const int n_fine = min(1 << shift, n_levels - first_level);
            const int fine_bin = find_rank(fine + first_level, n_fine, k - below_coarse, lane, &below_fine);
            if (lane == 0) {
                out[(size_t)y * out_w + x] = (T)(first_level + fine_bin);
            }
            __syncwarp();  // every lane has read the counts before the next updates
        }
        count_window(src, src_h, src_w, half, radius, out_y0 + y_stop - 1, cx, fine, coarse, shift, -1, lane);
        __syncwarp();
    }
}
