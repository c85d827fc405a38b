// ImageJ's lineSlideParabola (BackgroundSubtracter) for the nine passes of the sliding paraboloid:
// one thread per line; lines of a pass never share a pixel. Mirrors _slide_line in
// sliding_paraboloid.py (which the tests compare with ImageJ itself): float32 arithmetic in Java's
// order with explicit round-to-nearest intrinsics (no FMA contraction), the search limit in double.
// Each thread keeps its line and its list of touching candidates in global scratch memory.

#define INT_MAX_VALUE 2147483647
#define FLOAT_MAX_VALUE 3.4028234663852886e38f

__device__ __forceinline__ int java_int(double value)
{
    if (value != value) {
        return 0;
    }
    if (value >= 2147483647.0) {
        return INT_MAX_VALUE;
    }
    if (value <= -2147483648.0) {
        return -2147483647 - 1;
    }
    return (int)value;
}

extern "C" __global__ void slide_parabola_lines(float* __restrict__ pixels, const long long* __restrict__ starts,
                                                const long long* __restrict__ steps, const int* __restrict__ lengths,
                                                int n_lines, float coeff2, float* __restrict__ caches,
                                                int* __restrict__ next_points, int longest, int legacy)
{
    const int line = blockIdx.x * blockDim.x + threadIdx.x;
    if (line >= n_lines) {
        return;
    }
    const long long start = starts[line];
    const long long step = steps[line];
    const int length = lengths[line];
    float* cache = caches + (long long)line * longest;
    int* next_point = next_points + (long long)line * longest;

    float min_value = FLOAT_MAX_VALUE;
    int last_point = 0;
    float previous1 = 0.0f;
    float previous2 = 0.0f;
    const float curvature_test = __fmul_rn(1.999f, coeff2);
    for (int i = 0; i < length; ++i) {
        const float v = pixels[start + (long long)i * step];
        cache[i] = v;
        if (v < min_value) {
            min_value = v;
        }
        if (i >= 2) {
            bool candidate = __fsub_rn(__fsub_rn(__fadd_rn(previous1, previous1), previous2), v) < curvature_test;
            if (!legacy && (isnan(previous2) || isnan(v)) && !isnan(previous1)) {
                candidate = true;
            }
            if (candidate) {
                next_point[last_point] = i - 1;
                last_point = i - 1;
            }
        }
        previous2 = previous1;
        previous1 = v;
    }
    if (!legacy && isnan(cache[length - 1])) {
        next_point[last_point] = INT_MAX_VALUE;
    } else {
        next_point[last_point] = length - 1;
        next_point[length - 1] = INT_MAX_VALUE;
    }
    int i1 = 0;
    if (!legacy && isnan(cache[i1])) {
        i1 = next_point[i1];
    }
    while (i1 < length - 1) {
        const float v1 = cache[i1];
        float min_slope = FLOAT_MAX_VALUE;
        int i2 = 0;
        int search_to = length;
        int recalculate = 0;
        for (int j = next_point[i1]; j < search_to; j = next_point[j], ++recalculate) {
            const float v2 = cache[j];
            if (!legacy && isnan(v2)) {
                i1 = length - 1;
                break;
            }
            const float d = (float)(j - i1);
            const float slope = __fadd_rn(__fdiv_rn(__fsub_rn(v2, v1), d), __fmul_rn(coeff2, d));
            if (slope < min_slope) {
                min_slope = slope;
                i2 = j;
                recalculate = -3;
            }
            if (recalculate == 0) {
                const double b = (double)__fdiv_rn(__fmul_rn(0.5f, min_slope), coeff2);
                const double reach = __dadd_rn(__dadd_rn(b, sqrt(__dadd_rn(__dmul_rn(b, b),
                                                   (double)__fdiv_rn(__fsub_rn(v1, min_value), coeff2)))), 1.0);
                const int max_search = (int)((unsigned int)i1 + (unsigned int)java_int(reach));  // Java int overflow wraps
                if (max_search < search_to && max_search > 0) {
                    search_to = max_search;
                }
            }
        }
        if (i2 <= i1) {
            i2 = length - 1;
        }
        for (int k = i1 + 1; k < i2; ++k) {
            const float d = (float)(k - i1);
            pixels[start + (long long)k * step] = __fadd_rn(v1, __fmul_rn(d, __fsub_rn(min_slope, __fmul_rn(d, coeff2))));
        }
        i1 = i2;
    }
}
