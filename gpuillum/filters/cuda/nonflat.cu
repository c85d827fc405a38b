// Grey-scale erosion by a non-flat (additive) kernel given as terms (see nonflat.py): one thread
// per output pixel, out(y, x) = min over terms of src(y + oy + dy, x + ox + dx) + v, pixels beyond
// the border ignored. Sums round once (__fadd_rn / __dadd_rn: never contracted into an FMA);
// uint16 sums saturate at 65535. Term kinds: 0 single offset, 1 the pair -off/+off, 2 the window
// -off..+off (window terms of one kernel row come in increasing off, so each thread extends one
// running window minimum instead of rescanning it).
// instantiations: nonflat_erosion<unsigned short>; nonflat_erosion<float>; nonflat_erosion<double>

__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ unsigned short add_rn(unsigned short a, unsigned short b)
{
    const unsigned int sum = (unsigned int)a + (unsigned int)b;
    return (unsigned short)(sum > 65535u ? 65535u : sum);
}

template <typename T>
__device__ __forceinline__ T min_of(T a, T b)
{
    return b < a ? b : a;
}

template <typename T>
__global__ void nonflat_erosion(const T* __restrict__ src, T* __restrict__ out, int height, int width,
                                int height_out, int width_out, int oy, int ox,
                                const int* __restrict__ dys, const int* __restrict__ offs,
                                const int* __restrict__ kinds, const T* __restrict__ values, int n_terms,
                                T sentinel)
{
    const long long index = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (index >= (long long)height_out * width_out) {
        return;
    }
    const int x = (int)(index % width_out) + ox;
    const int y = (int)(index / width_out) + oy;
    T result = sentinel;
    int window_dy = 0x7fffffff;  // the kernel row of the running window minimum
    int window_off = -1;
    T window = sentinel;
    for (int t = 0; t < n_terms; ++t) {
        const int dy = dys[t];
        const int iy = y + dy;
        if (iy < 0 || iy >= height) {
            continue;
        }
        const T* row = src + (long long)iy * width;
        const int off = offs[t];
        const int kind = kinds[t];
        T value = sentinel;
        if (kind == 0) {
            const int ix = x + off;
            if (ix >= 0 && ix < width) {
                value = row[ix];
            }
        } else if (kind == 1) {
            if (x - off >= 0 && x - off < width) {
                value = row[x - off];
            }
            if (x + off >= 0 && x + off < width) {
                value = min_of(value, row[x + off]);
            }
        } else {
            if (dy != window_dy) {
                window_dy = dy;
                window_off = -1;
                window = sentinel;
            }
            for (int w = window_off + 1; w <= off; ++w) {
                if (x - w >= 0 && x - w < width) {
                    window = min_of(window, row[x - w]);
                }
                if (w > 0 && x + w >= 0 && x + w < width) {
                    window = min_of(window, row[x + w]);
                }
            }
            window_off = off;
            value = window;
        }
        if (value == sentinel) {
            continue;  // no pixel: the sentinel never wins (and +inf + v stays +inf anyway)
        }
        result = min_of(result, add_rn(value, values[t]));
    }
    out[index] = result;
}
