/* base/tensor.c — dtype table and half-precision conversions (see tensor.h).
 * Must never: allocate, or round other than to nearest even. */
#include "base/tensor.h"

#include <string.h>

static const struct { const char *name; size_t size; } dtypes[BP_DTYPE_COUNT] = {
    [BP_F32] = {"f32", 4}, [BP_F64] = {"f64", 8}, [BP_F16] = {"f16", 2}, [BP_BF16] = {"bf16", 2},
    [BP_I64] = {"i64", 8}, [BP_I32] = {"i32", 4}, [BP_I16] = {"i16", 2}, [BP_I8] = {"i8", 1},
    [BP_U8] = {"u8", 1},   [BP_BOOL] = {"bool", 1},
};

size_t bp_dtype_size(bp_dtype t) { return (unsigned)t < BP_DTYPE_COUNT ? dtypes[t].size : 0; }

const char *bp_dtype_name(bp_dtype t) { return (unsigned)t < BP_DTYPE_COUNT ? dtypes[t].name : "?"; }

int bp_dtype_parse(const char *name, size_t len, bp_dtype *out) {
    for (int i = 0; i < BP_DTYPE_COUNT; i++) {
        if (strlen(dtypes[i].name) == len && memcmp(dtypes[i].name, name, len) == 0) {
            *out = (bp_dtype)i;
            return 0;
        }
    }
    return -1;
}

int64_t bp_numel(const int64_t *shape, int ndim) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

float bp_bf16_to_f32(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t bp_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float bp_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, u;
    if (exp == 0) {
        if (mant == 0) {
            u = sign;
        } else { /* subnormal: renormalise */
            exp = 127 - 15 + 1;
            while (!(mant & 0x400u)) { mant <<= 1; exp--; }
            mant &= 0x3ffu;
            u = sign | (exp << 23) | (mant << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (mant << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t bp_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u;
    int32_t exp = (int32_t)((u >> 23) & 0xff) - 127 + 15;
    uint32_t mant = u & 0x7fffffu;
    if (((u >> 23) & 0xff) == 0xff) return (uint16_t)(sign | 0x7c00u | (mant ? 0x200u : 0));
    if (exp >= 31) return (uint16_t)(sign | 0x7c00u);
    if (exp <= 0) {
        if (exp < -10) return (uint16_t)sign;
        mant |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - exp);
        uint32_t half = mant >> shift, rem = mant & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1u))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = sign | ((uint32_t)exp << 10) | (mant >> 13), rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (half & 1u))) half++;
    return (uint16_t)half;
}
