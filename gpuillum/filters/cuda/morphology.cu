// Hand-written: cupyx grey_erosion loops over the whole window (O(r) per pixel for a square, O(r^2) for a disk); these are O(1) (vHGW) and O(r) (chord look-ups).
// Flat grey-scale erosion with borders ignored; dilation is erosion of the order-flipped image (Python side).
// instantiations: chord_erosion<unsigned char>; chord_erosion<unsigned short>; chord_erosion<float>; sparse_table_level<unsigned char>; sparse_table_level<unsigned short>; sparse_table_level<float>; vhgw_blocks<unsigned char>; vhgw_blocks<unsigned short>; vhgw_blocks<float>; vhgw_combine<unsigned char>; vhgw_combine<unsigned short>; vhgw_combine<float>

template <typename T>
__device__ __forceinline__ T min_of(T a, T b)
{
    return b < a ? b : a;
}

// Level k of a sparse table from level k-1 (shift = 2^(k-1)): next[y][x] = min over [x, x + 2^k).
// Entries whose window passes the row end keep the level k-1 value; look-ups never read them.
template <typename T>
__global__ void sparse_table_level(const T* __restrict__ previous, T* __restrict__ next, int rows, int width, int shift)
{
    const long long index = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (index >= (long long)rows * width) {
        return;
    }
    const int x = (int)(index % width);
    T value = previous[index];
    if (x + shift < width) {
        value = min_of(value, previous[index + shift]);
    }
    next[index] = value;
}

// One thread per output pixel of rows [out0, out0 + rows_out): minimum over the disk's chords,
// row offsets dy = -reach..reach with half-widths half[dy + reach], out-of-bounds pixels ignored.
// Chord [a, b] = min(T_k[a], T_k[b - 2^k + 1]) with 2^k <= b - a + 1 < 2^(k+1); T_0 is the image,
// T_k (k >= 1) is levels[k - 1], holding image rows in0 .. in0 + rows_alloc - 1.
template <typename T>
__global__ void chord_erosion(const T* __restrict__ image, const T* __restrict__ levels, T* __restrict__ out,
                              int height, int width, int in0, int rows_alloc, int out0, int rows_out,
                              const int* __restrict__ half, int reach)
{
    const long long index = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (index >= (long long)rows_out * width) {
        return;
    }
    const int x = (int)(index % width);
    const int y = out0 + (int)(index / width);
    const long long level_size = (long long)rows_alloc * width;
    const int dy_first = max(-reach, -y);
    const int dy_last = min(reach, height - 1 - y);
    T result = image[(long long)y * width + x];
    for (int dy = dy_first; dy <= dy_last; ++dy) {
        const int w = __ldg(half + dy + reach);
        const int a = max(x - w, 0);
        const int b = min(x + w, width - 1);
        const int k = 31 - __clz(b - a + 1);
        const int yy = y + dy;
        T value;
        if (k == 0) {
            value = image[(long long)yy * width + a];
        } else {
            const T* row = levels + (long long)(k - 1) * level_size + (long long)(yy - in0) * width;
            value = min_of(row[a], row[b - (1 << k) + 1]);
        }
        result = min_of(result, value);
    }
    out[(long long)y * width + x] = result;
}

// van Herk / Gil-Werman scans along lines (rows or columns, given by strides) padded by radius
// sentinels on each side: one thread per (line, block of 2r+1 padded positions) writes the block's
// prefix and suffix minima. Scan layout [padded position][line], so neighbouring lines coalesce.
template <typename T>
__global__ void vhgw_blocks(const T* __restrict__ src, T* __restrict__ prefix, T* __restrict__ suffix,
                            int lines, int length, long long line_stride, long long elem_stride, int radius,
                            int blocks, T sentinel)
{
    const long long index = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (index >= (long long)lines * blocks) {
        return;
    }
    const int line = (int)(index % lines);
    const int block = (int)(index / lines);
    const int size = 2 * radius + 1;
    const int start = block * size;
    const T* base = src + (long long)line * line_stride;
    T running = sentinel;
    for (int p = start; p < start + size; ++p) {
        const int i = p - radius;
        if (i >= 0 && i < length) {
            running = min_of(running, base[(long long)i * elem_stride]);
        }
        prefix[(long long)p * lines + line] = running;
    }
    running = sentinel;
    for (int p = start + size - 1; p >= start; --p) {
        const int i = p - radius;
        if (i >= 0 && i < length) {
            running = min_of(running, base[(long long)i * elem_stride]);
        }
        suffix[(long long)p * lines + line] = running;
    }
}

// out[i] = min over [i - r, i + r] = min(suffix[i], prefix[i + 2r]) in padded positions.
template <typename T>
__global__ void vhgw_combine(const T* __restrict__ prefix, const T* __restrict__ suffix, T* __restrict__ out,
                             int lines, int length, long long line_stride, long long elem_stride, int radius)
{
    const long long index = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (index >= (long long)lines * length) {
        return;
    }
    const int line = (int)(index % lines);
    const int i = (int)(index / lines);
    const T value = min_of(suffix[(long long)i * lines + line], prefix[(long long)(i + 2 * radius) * lines + line]);
    out[(long long)line * line_stride + (long long)i * elem_stride] = value;
}
