#pragma once
// Code tables and per-element math of bitsandbytes' blockwise quantizers, shared by the host
// reference and the CUDA kernels. The tables and the decision trees are bitsandbytes' own
// (csrc/kernels.cu: dQuantizeNF4, dQuantizeFP4, dQuantize, nf4/fp4_dequantization_lut;
// functional.py: get_4bit_type, create_dynamic_map(signed=True)), so codes match bit for bit.
#include <cstdint>

#include "lvt/quant/numeric.hpp"

namespace lvt::quant {

// ---- 4-bit tables ---------------------------------------------------------------------------
// NF4: functional.get_4bit_type("nf4") == kernels.cu nf4_dequantization_lut (same literals).
#define LVT_QUANT_NF4_CODE                                                                   \
  -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,                     \
      -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,                \
      0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,   \
      0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f
inline constexpr float nf4_code[16] = {LVT_QUANT_NF4_CODE};

// FP4 (e2m1, bias 3) as functional.get_4bit_type("fp4") stores it in `quant_map`: the values
// [0, 0.0625, 8, 12, 4, 6, 2, 3, -0, -0.0625, -8, ...] divided (fp32) by their absmax 12.
inline constexpr float fp4_code[16] = {
    0.0f / 12.0f,  0.0625f / 12.0f,  8.0f / 12.0f,  12.0f / 12.0f,
    4.0f / 12.0f,  6.0f / 12.0f,     2.0f / 12.0f,  3.0f / 12.0f,
    -0.0f / 12.0f, -0.0625f / 12.0f, -8.0f / 12.0f, -12.0f / 12.0f,
    -4.0f / 12.0f, -6.0f / 12.0f,    -2.0f / 12.0f, -3.0f / 12.0f};
// The CUDA dequantizer's magnitudes (kernels.cu fp4_dequantization_lut); equal as floats to the
// table above (tests check it), kept verbatim so the dequantize path reads like bnb's.
#define LVT_QUANT_FP4_MAGNITUDE \
  0.0f, 0.005208333333f, 0.66666667f, 1.0f, 0.33333333f, 0.5f, 0.16666667f, 0.25f
inline constexpr float fp4_magnitude[8] = {LVT_QUANT_FP4_MAGNITUDE};

// NF4 decision thresholds (midpoints between neighbouring codes), in code order 0..14:
// code c is chosen for threshold[c-1] < x <= threshold[c] (dQuantizeNF4's `x > t` tree).
inline constexpr float nf4_threshold[15] = {
    -0.8480964004993439f, -0.6106329262256622f,  -0.4599952697753906f, -0.33967943489551544f,
    -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
    0.1202552504837513f,  0.2035212516784668f,   0.2920137718319893f,  0.3893125355243683f,
    0.5016634166240692f,  0.6427869200706482f,   0.8614784181118011f};

// dQuantizeNF4: the binary tree of kernels.cu with its literal thresholds and strict `>`.
LVT_HD inline std::uint8_t quantize_nf4(float x) {
  if (x > 0.03979014977812767f) {
    if (x > 0.3893125355243683f) {
      if (x > 0.6427869200706482f) return x > 0.8614784181118011f ? 0b1111 : 0b1110;
      return x > 0.5016634166240692f ? 0b1101 : 0b1100;
    }
    if (x > 0.2035212516784668f) return x > 0.2920137718319893f ? 0b1011 : 0b1010;
    return x > 0.1202552504837513f ? 0b1001 : 0b1000;
  }
  if (x > -0.33967943489551544f) {
    if (x > -0.13791173323988914f) return x > -0.045525018125772476f ? 0b0111 : 0b0110;
    return x > -0.23460740596055984f ? 0b0101 : 0b0100;
  }
  if (x > -0.6106329262256622f) return x > -0.4599952697753906f ? 0b0011 : 0b0010;
  return x > -0.8480964004993439f ? 0b0001 : 0b0000;
}

// dQuantizeFP4: sign bit from x < 0, then a tree on |x| with bnb's literal pivots.
LVT_HD inline std::uint8_t quantize_fp4(float x) {
  const int sign = x < 0 ? 0b1000 : 0b0000;
  x = x < 0 ? -x : x;  // fabsf; NaN never reaches here (inputs are checked finite)
  if (x > 0.29166667f) {
    if (x > 0.583333f) return std::uint8_t((x > 0.8333333f ? 0b0011 : 0b0010) + sign);
    return std::uint8_t((x > 0.4166667f ? 0b0101 : 0b0100) + sign);
  }
  if (x > 0.0859375f) return std::uint8_t((x > 0.20833333f ? 0b0111 : 0b0110) + sign);
  return std::uint8_t((x > 0.00260417f ? 0b0001 : 0b0000) + sign);
}

#if defined(__CUDACC__)
// Device copies of the dequantization tables (constant memory: one value broadcast per warp in
// the common case of equal codes, and small enough to stay cached).
static __constant__ float nf4_code_dev[16] = {LVT_QUANT_NF4_CODE};
static __constant__ float fp4_magnitude_dev[8] = {LVT_QUANT_FP4_MAGNITUDE};
#endif

LVT_HD inline float dequantize_nf4(std::uint8_t q) {
#if defined(__CUDA_ARCH__)
  return nf4_code_dev[q & 0x0f];
#else
  return nf4_code[q & 0x0f];
#endif
}
// dDequantizeFP4Tree: magnitude times a sign of +-1.0f (so code 0b1000 is -0.0).
LVT_HD inline float dequantize_fp4(std::uint8_t q) {
  const float sign = 1.0f - 2.0f * float((q & 0b1000) >> 3);
#if defined(__CUDA_ARCH__)
  return fp4_magnitude_dev[q & 0b0111] * sign;
#else
  return fp4_magnitude[q & 0b0111] * sign;
#endif
}

enum class Code4 : std::uint8_t { nf4, fp4 };

template <Code4 C>
LVT_HD inline std::uint8_t quantize4(float x) {
  if constexpr (C == Code4::nf4) return quantize_nf4(x);
  else return quantize_fp4(x);
}
template <Code4 C>
LVT_HD inline float dequantize4(std::uint8_t q) {
  if constexpr (C == Code4::nf4) return dequantize_nf4(q);
  else return dequantize_fp4(q);
}

// ---- the signed dynamic 8-bit map ---------------------------------------------------------------
// functional.create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8) as the fp32
// tensor torch builds: for exponent i = 0..6, 2^i means of adjacent points of
// torch.linspace(0.1, 1, 2^i + 1) scaled by 10^(i-6), both signs, then 0 and 1.0, sorted.
// Index 127 is 0; the table is asymmetric: +1.0 at 255 but -0.99296875 at 0.
// torch's x86 build evaluates linspace's start + step*i as a fused multiply-add; tests/quant
// recomputes the map that way and checks every entry. bnb stores the map it used in every
// checkpoint (`nested_quant_map`), and lvt dequantizes with the stored map, so a file written by
// a build that rounds differently still reads back exactly.
#define LVT_QUANT_DYNAMIC_MAP \
    -0.992968738079071f, -0.9789062738418579f, -0.96484375f, -0.9507812261581421f, \
    -0.936718761920929f, -0.922656238079071f, -0.9085937738418579f, -0.89453125f, \
    -0.8804687261581421f, -0.866406261920929f, -0.852343738079071f, -0.8382812738418579f, \
    -0.82421875f, -0.8101562261581421f, -0.796093761920929f, -0.782031238079071f, \
    -0.7679687738418579f, -0.75390625f, -0.7398437261581421f, -0.725781261920929f, \
    -0.7117187976837158f, -0.6976562738418579f, -0.68359375f, -0.6695312261581421f, \
    -0.655468761920929f, -0.6414062976837158f, -0.6273437738418579f, -0.61328125f, \
    -0.5992187261581421f, -0.585156261920929f, -0.5710937976837158f, -0.5570312738418579f, \
    -0.54296875f, -0.5289062261581421f, -0.5148437023162842f, -0.500781238079071f, \
    -0.48671871423721313f, -0.47265625f, -0.4585937261581421f, -0.44453126192092896f, \
    -0.43046873807907104f, -0.4164062440395355f, -0.40234375f, -0.3882812261581421f, \
    -0.37421876192092896f, -0.36015623807907104f, -0.3460937440395355f, -0.33203125f, \
    -0.3179687261581421f, -0.30390626192092896f, -0.28984373807907104f, -0.2757812738418579f, \
    -0.26171875f, -0.24765624105930328f, -0.23359374701976776f, -0.21953125298023224f, \
    -0.20546874403953552f, -0.19140625f, -0.17734375596046448f, -0.16328124701976776f, \
    -0.14921875298023224f, -0.13515624403953552f, -0.12109375f, -0.10703125596046448f, \
    -0.09859374910593033f, -0.09578125923871994f, -0.09296875447034836f, -0.09015624970197678f, \
    -0.08734375238418579f, -0.08453124761581421f, -0.08171875774860382f, -0.07890625298023224f, \
    -0.07609374821186066f, -0.07328125089406967f, -0.07046874612569809f, -0.0676562562584877f, \
    -0.06484375149011612f, -0.062031250447034836f, -0.05921875312924385f, -0.05640624836087227f, \
    -0.053593751043081284f, -0.05078125f, -0.047968748956918716f, -0.04515625163912773f, \
    -0.04234374687075615f, -0.039531249552965164f, -0.03671875223517418f, -0.033906251192092896f, \
    -0.031093750149011612f, -0.028281250968575478f, -0.025468749925494194f, -0.02265625074505806f, \
    -0.019843751564621925f, -0.017031250521540642f, -0.014218750409781933f, -0.011406250298023224f, \
    -0.009718749672174454f, -0.009156249463558197f, -0.008593750186264515f, -0.008031249977648258f, \
    -0.0074687497690320015f, -0.006906250026077032f, -0.006343749817460775f, -0.005781250074505806f, \
    -0.0052187503315508366f, -0.0046562496572732925f, -0.004093749914318323f, -0.0035312497057020664f, \
    -0.002968749962747097f, -0.002406249986961484f, -0.001843750011175871f, -0.001281249918974936f, \
    -0.0009437500848434865f, -0.0008312499849125743f, -0.0007187500596046448f, -0.0006062500760890543f, \
    -0.000493750034365803f, -0.0003812500217463821f, -0.0002687500382307917f, -0.00015625001105945557f, \
    -8.874999912222847e-05f, -6.625000241911039e-05f, -4.374999844003469e-05f, -2.1249998098937795e-05f, \
    -7.749999895168003e-06f, -3.250000190746505e-06f, -5.500000384017767e-07f, 0.0f, \
    5.500000384017767e-07f, 3.250000190746505e-06f, 7.749999895168003e-06f, 2.1249998098937795e-05f, \
    4.374999844003469e-05f, 6.625000241911039e-05f, 8.874999912222847e-05f, 0.00015625001105945557f, \
    0.0002687500382307917f, 0.0003812500217463821f, 0.000493750034365803f, 0.0006062500760890543f, \
    0.0007187500596046448f, 0.0008312499849125743f, 0.0009437500848434865f, 0.001281249918974936f, \
    0.001843750011175871f, 0.002406249986961484f, 0.002968749962747097f, 0.0035312497057020664f, \
    0.004093749914318323f, 0.0046562496572732925f, 0.0052187503315508366f, 0.005781250074505806f, \
    0.006343749817460775f, 0.006906250026077032f, 0.0074687497690320015f, 0.008031249977648258f, \
    0.008593750186264515f, 0.009156249463558197f, 0.009718749672174454f, 0.011406250298023224f, \
    0.014218750409781933f, 0.017031250521540642f, 0.019843751564621925f, 0.02265625074505806f, \
    0.025468749925494194f, 0.028281250968575478f, 0.031093750149011612f, 0.033906251192092896f, \
    0.03671875223517418f, 0.039531249552965164f, 0.04234374687075615f, 0.04515625163912773f, \
    0.047968748956918716f, 0.05078125f, 0.053593751043081284f, 0.05640624836087227f, \
    0.05921875312924385f, 0.062031250447034836f, 0.06484375149011612f, 0.0676562562584877f, \
    0.07046874612569809f, 0.07328125089406967f, 0.07609374821186066f, 0.07890625298023224f, \
    0.08171875774860382f, 0.08453124761581421f, 0.08734375238418579f, 0.09015624970197678f, \
    0.09296875447034836f, 0.09578125923871994f, 0.09859374910593033f, 0.10703125596046448f, \
    0.12109375f, 0.13515624403953552f, 0.14921875298023224f, 0.16328124701976776f, \
    0.17734375596046448f, 0.19140625f, 0.20546874403953552f, 0.21953125298023224f, \
    0.23359374701976776f, 0.24765624105930328f, 0.26171875f, 0.2757812738418579f, \
    0.28984373807907104f, 0.30390626192092896f, 0.3179687261581421f, 0.33203125f, \
    0.3460937440395355f, 0.36015623807907104f, 0.37421876192092896f, 0.3882812261581421f, \
    0.40234375f, 0.4164062440395355f, 0.43046873807907104f, 0.44453126192092896f, \
    0.4585937261581421f, 0.47265625f, 0.48671871423721313f, 0.500781238079071f, \
    0.5148437023162842f, 0.5289062261581421f, 0.54296875f, 0.5570312738418579f, \
    0.5710937976837158f, 0.585156261920929f, 0.5992187261581421f, 0.61328125f, \
    0.6273437738418579f, 0.6414062976837158f, 0.655468761920929f, 0.6695312261581421f, \
    0.68359375f, 0.6976562738418579f, 0.7117187976837158f, 0.725781261920929f, \
    0.7398437261581421f, 0.75390625f, 0.7679687738418579f, 0.782031238079071f, \
    0.796093761920929f, 0.8101562261581421f, 0.82421875f, 0.8382812738418579f, \
    0.852343738079071f, 0.866406261920929f, 0.8804687261581421f, 0.89453125f, \
    0.9085937738418579f, 0.922656238079071f, 0.936718761920929f, 0.9507812261581421f, \
    0.96484375f, 0.9789062738418579f, 0.992968738079071f, 1.0f
inline constexpr float dynamic_map[256] = {LVT_QUANT_DYNAMIC_MAP};
#if defined(__CUDACC__)
static __constant__ float dynamic_map_dev[256] = {LVT_QUANT_DYNAMIC_MAP};
#endif

// dQuantize<0> (kernels.cu): a 7-step binary search from pivot 127 with strict `x > val`, then
// round to the nearer neighbour by comparing with the midpoint (upper+val)*0.5f, ties going to
// `pivot` (the code the search ended on). `code` is the 256-entry map (shared memory on device).
LVT_HD inline std::uint8_t quantize_dynamic(const float* code, float x) {
  int pivot = 127, upper_pivot = 255, lower_pivot = 0;
  float lower = -1.0f, upper = 1.0f;
  float val = code[pivot];
  for (int i = 64; i > 0; i >>= 1) {
    if (x > val) {
      lower_pivot = pivot;
      lower = val;
      pivot += i;
    } else {
      upper_pivot = pivot;
      upper = val;
      pivot -= i;
    }
    val = code[pivot];
  }
  if (upper_pivot == 255) upper = code[upper_pivot];
  if (lower_pivot == 0) lower = code[lower_pivot];
  if (x > val) {
    const float midpoint = (upper + val) * 0.5f;
    return std::uint8_t(x > midpoint ? upper_pivot : pivot);
  }
  const float midpoint = (lower + val) * 0.5f;
  return std::uint8_t(x < midpoint ? lower_pivot : pivot);
}

// The scale every bitsandbytes quantizer multiplies by: 1 / absmax in fp32 (an all-zero block has
// absmax 0, scale inf, and x * scale = NaN, which both trees send to code 0 — as bnb does).
LVT_HD inline float inverse_absmax(float absmax) {
#if defined(__CUDA_ARCH__)
  return __frcp_rn(absmax);  // IEEE round-to-nearest, whatever the fast-math flags
#else
  return 1.0f / absmax;
#endif
}

}  // namespace lvt::quant
