// Quantization: code tables, bnb's rounding at thresholds, byte layout, padding, double
// quantization, error figures on normal and heavy-tailed data, bad input.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "lvt/quant/blockwise.hpp"
#include "../errors.hpp"

using namespace lvt;
using namespace lvt::quant;

namespace {

std::vector<float> normal_data(std::size_t n, unsigned seed, float sigma = 0.02f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, sigma);
  std::vector<float> x(n);
  for (auto& v : x) v = d(rng);
  return x;
}
// Student-t with 3 degrees of freedom: heavy tails like real LLM weight rows (outliers of 10-50
// sigma appear), scaled to a weight-like magnitude.
std::vector<float> student_t_data(std::size_t n, unsigned seed, float scale = 0.01f) {
  std::mt19937 rng(seed);
  std::student_t_distribution<float> d(3.0f);
  std::vector<float> x(n);
  for (auto& v : x) v = scale * d(rng);
  return x;
}

// Relative RMS error: ||x - y|| / ||x||.
double rel_rms(const std::vector<float>& x, const std::vector<float>& y) {
  double e = 0, s = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    e += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
    s += double(x[i]) * x[i];
  }
  return std::sqrt(e / s);
}

std::vector<float> roundtrip4(Code4 c, const std::vector<float>& x, int block, bool dq) {
  Quant4 q = quantize4(c, x.data(), std::int64_t(x.size()), block, dq, "w");
  std::vector<float> y(x.size());
  dequantize4(q, y.data());
  return y;
}

std::vector<float> roundtrip_int8(const std::vector<float>& x, int block) {
  std::vector<std::int8_t> q(x.size());
  std::vector<float> am(std::size_t(blocks_of(std::int64_t(x.size()), block))), y(x.size());
  quantize_int8(x.data(), std::int64_t(x.size()), block, q.data(), am.data(), "w");
  dequantize_int8(q.data(), am.data(), std::int64_t(x.size()), block, y.data());
  return y;
}


// bnb's create_dynamic_map(signed=True) recomputed the way torch evaluates it in fp32:
// torch.linspace(0.1, 1, k) (start + step*i below the halfway index, end - step*(k-1-i) above,
// each a fused multiply-add as torch's x86 build compiles them), means (a + b) / 2, times the
// fp32 scalar 10^(i-6).
std::vector<float> dynamic_map_recomputed() {
  std::vector<float> data;
  for (int i = 0; i < 7; ++i) {
    const int k = (1 << i) + 1;
    const float start = 0.1f, end = 1.0f;
    const float step = (end - start) / float(k - 1);
    std::vector<float> b(static_cast<std::size_t>(k));
    for (int j = 0; j < k; ++j)
      b[std::size_t(j)] = j < k / 2 ? std::fma(step, float(j), start)
                                    : std::fma(-step, float(k - j - 1), end);
    const float scale = float(std::pow(10.0, -6 + i));
    for (int j = 0; j + 1 < k; ++j) {
      const float mean = (b[std::size_t(j)] + b[std::size_t(j) + 1]) / 2.0f;
      data.push_back(scale * mean);
      data.push_back(-scale * mean);
    }
  }
  data.push_back(0.0f);
  data.push_back(1.0f);
  std::sort(data.begin(), data.end());
  return data;
}

}  // namespace

TEST_CASE("fp16 and bf16 conversions round to nearest even") {
  // Ties: 1 + 2^-11 lies halfway between fp16 1.0 and 1+2^-10 -> even (1.0); 1 + 3*2^-11 -> up.
  CHECK(to_fp16(1.0f + 0x1p-11f).bits == 0x3c00);
  CHECK(to_fp16(1.0f + 3 * 0x1p-11f).bits == 0x3c02);
  CHECK(to_fp16(65504.0f).bits == 0x7bff);
  CHECK(to_fp16(65519.0f).bits == 0x7bff);
  CHECK(to_fp16(65520.0f).bits == 0x7c00);
  CHECK(to_fp16(0x1p-24f).bits == 0x0001);        // smallest subnormal
  CHECK(to_fp16(0x1p-25f).bits == 0x0000);        // tie between 0 and 2^-24 -> even (0)
  CHECK(to_fp16(0x1.8p-25f).bits == 0x0001);      // above the tie
  CHECK(to_fp16(3 * 0x1p-25f).bits == 0x0002);    // 1.5 * 2^-24: tie -> even (2)
  CHECK(to_fp16(-2.0f).bits == 0xc000);
  CHECK(to_bf16(1.0f + 0x1p-8f).bits == 0x3f80);  // tie -> even
  CHECK(to_bf16(1.0f + 3 * 0x1p-8f).bits == 0x3f82);
  CHECK(to_bf16(3.4028235e38f).bits == 0x7f80);      // rounds up past the largest bf16: inf
  CHECK(to_bf16(-3.3895314e38f).bits == 0xff7f);     // the largest bf16 itself
  CHECK(std::isnan(to_float(to_bf16(std::nanf("")))));
  CHECK(std::isnan(to_float(to_fp16(std::nanf("")))));
  // Every finite fp16 survives fp16 -> float -> fp16.
  for (unsigned b = 0; b < 65536; ++b) {
    const fp16 h{std::uint16_t(b)};
    if (((b >> 10) & 0x1f) == 0x1f) continue;
    REQUIRE(to_fp16(to_float(h)).bits == b);
  }
  // Against the compiler's own _Float16 / fp32 rounding on random floats (fresh seed each run
  // would make failures unreproducible; the seed is fixed, the inputs are not special).
  std::mt19937 rng(7);
  std::uniform_int_distribution<std::uint32_t> bits(0, 0xffffffffu);
  for (int i = 0; i < 200000; ++i) {
    const std::uint32_t u = bits(rng);
    const float f = bits_float(u);
    if (std::isnan(f)) continue;
    const _Float16 ref = _Float16(f);
    std::uint16_t rb;
    std::memcpy(&rb, &ref, 2);
    REQUIRE(to_fp16(f).bits == rb);
    // bf16 reference: round the double value to 8 significant bits by hand.
    const float trunc = bits_float(u & 0xffff0000u), next = bits_float((u & 0xffff0000u) + 0x10000u);
    if (std::isinf(next) || std::isinf(f)) continue;  // overflow rounding checked below
    const double d_lo = std::fabs(double(f) - trunc), d_hi = std::fabs(double(next) - f);
    const std::uint16_t lo = std::uint16_t(u >> 16);
    const std::uint16_t want = d_lo < d_hi ? lo : d_hi < d_lo ? std::uint16_t(lo + 1)
                                                              : std::uint16_t(lo + (lo & 1));
    REQUIRE(to_bf16(f).bits == want);
  }
}

TEST_CASE("code tables are bitsandbytes'") {
  // NF4: get_4bit_type('nf4'), sorted, -1 .. 1, zero at code 7.
  CHECK(nf4_code[0] == -1.0f);
  CHECK(nf4_code[7] == 0.0f);
  CHECK(nf4_code[15] == 1.0f);
  CHECK(nf4_code[8] == 0.07958029955625534f);
  for (int i = 0; i < 15; ++i) CHECK(nf4_code[i] < nf4_code[i + 1]);
  // Each NF4 threshold is the midpoint of its neighbours (to the 1e-7 the tree was printed to).
  for (int i = 0; i < 15; ++i)
    CHECK(std::fabs(nf4_threshold[i] - 0.5f * (nf4_code[i] + nf4_code[i + 1])) < 1e-7f);
  // FP4: the kernel's magnitudes equal quant_map's fp32 values, code 0b1sss is the negative.
  for (int i = 0; i < 8; ++i) {
    CHECK(fp4_magnitude[i] == fp4_code[i]);
    CHECK(dequantize_fp4(std::uint8_t(i)) == fp4_code[i]);
    CHECK(dequantize_fp4(std::uint8_t(i | 8)) == fp4_code[i | 8]);
  }
  CHECK(fp4_code[3] == 1.0f);
  CHECK(fp4_code[1] == 0.0625f / 12.0f);
  CHECK(std::signbit(dequantize_fp4(8)));  // -0.0, as bnb's 0 * -1
  // Dynamic map: 256 sorted fp32 values, [127] = 0, [255] = 1, [0] = -0.99296875.
  for (int i = 0; i < 255; ++i) REQUIRE(dynamic_map[i] < dynamic_map[i + 1]);
  CHECK(dynamic_map[127] == 0.0f);
  CHECK(dynamic_map[255] == 1.0f);
  CHECK(dynamic_map[0] == -0.992968738079071f);
  CHECK(dynamic_map[128] == 5.500000384017767e-07f);
  // The literal table is what create_dynamic_map computes, value for value; symmetric but for
  // the +1.0 at the top.
  const std::vector<float> re = dynamic_map_recomputed();
  REQUIRE(re.size() == 256);
  int diff = 0;
  for (int i = 0; i < 256; ++i) diff += re[std::size_t(i)] != dynamic_map[i];
  CHECK(diff == 0);
  for (int k = 1; k < 128; ++k) CHECK(dynamic_map[127 - k] == -dynamic_map[127 + k]);
}

TEST_CASE("NF4 and FP4 pick codes exactly as dQuantizeNF4 / dQuantizeFP4 at the thresholds") {
  // x == threshold stays below (strict `x > t`), the next float up goes above.
  for (int c = 0; c < 15; ++c) {
    const float t = nf4_threshold[c];
    CHECK(quantize_nf4(t) == c);
    CHECK(quantize_nf4(std::nextafter(t, 2.0f)) == c + 1);
  }
  CHECK(quantize_nf4(0.0f) == 7);
  CHECK(quantize_nf4(-1.0f) == 0);
  CHECK(quantize_nf4(1.0f) == 15);
  CHECK(quantize_nf4(std::nanf("")) == 0);  // NaN falls through every `>` to code 0
  // FP4 pivots on |x|; the sign bit comes from x < 0.
  const float piv[7] = {0.00260417f, 0.0859375f, 0.20833333f, 0.29166667f,
                        0.4166667f,  0.583333f,  0.8333333f};
  const std::uint8_t below[7] = {0b000, 0b001, 0b110, 0b111, 0b100, 0b101, 0b010};
  const std::uint8_t above[7] = {0b001, 0b110, 0b111, 0b100, 0b101, 0b010, 0b011};
  for (int k = 0; k < 7; ++k) {
    CHECK(quantize_fp4(piv[k]) == below[k]);
    CHECK(quantize_fp4(std::nextafter(piv[k], 2.0f)) == above[k]);
    CHECK(quantize_fp4(-piv[k]) == (below[k] | 8));
    CHECK(quantize_fp4(-std::nextafter(piv[k], 2.0f)) == (above[k] | 8));
  }
  CHECK(quantize_fp4(-0.0f) == 0);
  // Every code maps back to itself (dequantize then quantize).
  for (int c = 0; c < 16; ++c) {
    CHECK(quantize_nf4(nf4_code[c]) == c);
    if (c != 8) CHECK(quantize_fp4(dequantize_fp4(std::uint8_t(c))) == c);  // -0 -> +0 code
  }
}

TEST_CASE("8-bit dynamic search matches dQuantize, ties included") {
  for (int i = 0; i < 256; ++i) CHECK(quantize_dynamic(dynamic_map, dynamic_map[i]) == i);
  // Midpoint ties, traced by hand through dQuantize: between codes 127 (0) and 128 the search
  // ends on pivot 128 and keeps it; between 126 and 127 it ends on 126 and keeps it.
  const float m127 = (dynamic_map[127] + dynamic_map[128]) * 0.5f;
  const float m126 = (dynamic_map[126] + dynamic_map[127]) * 0.5f;
  CHECK(quantize_dynamic(dynamic_map, m127) == 128);
  CHECK(quantize_dynamic(dynamic_map, m126) == 126);
  CHECK(quantize_dynamic(dynamic_map, std::nextafter(m127, 0.0f)) == 127);
  CHECK(quantize_dynamic(dynamic_map, std::nextafter(m126, 0.0f)) == 127);
  // Beyond the table: -1 goes to code 0 (-0.99297), +1 to 255.
  CHECK(quantize_dynamic(dynamic_map, -1.0f) == 0);
  CHECK(quantize_dynamic(dynamic_map, 1.0f) == 255);
  // Away from ties the search returns the nearest code.
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (int k = 0; k < 20000; ++k) {
    const float x = u(rng);
    const int q = quantize_dynamic(dynamic_map, x);
    int best = 0;
    for (int i = 1; i < 256; ++i)
      if (std::fabs(dynamic_map[i] - x) < std::fabs(dynamic_map[best] - x)) best = i;
    REQUIRE(std::fabs(dynamic_map[q] - x) == std::fabs(dynamic_map[best] - x));
  }
}

TEST_CASE("4-bit byte layout: first element in the high nibble, absmax per block, padding") {
  // Block 64, absmax a power of two so the scale is exact: values land on codes exactly.
  std::vector<float> x(130);
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-0.4f, 0.4f);
  for (auto& v : x) v = u(rng) * 0.5f;
  x[0] = 0.5f;             // absmax of block 0 -> code 15
  x[1] = -0.5f;            // -> code 0
  x[2] = 0.0f;             // -> code 7
  x[3] = 0.5f * nf4_threshold[9];  // exactly on a threshold: stays on code 9
  x[64] = -2.0f;           // absmax of block 1 (negative)
  x[128] = 0.25f;          // block 2 holds 2 elements
  x[129] = -0.125f;
  std::vector<std::uint8_t> packed(std::size_t(packed_bytes(130)));
  std::vector<float> absmax(3);
  quantize_4bit<Code4::nf4>(x.data(), 130, 64, packed.data(), absmax.data(), "layout");
  CHECK(packed.size() == 65);
  CHECK(absmax[0] == 0.5f);
  CHECK(absmax[1] == 2.0f);
  CHECK(absmax[2] == 0.25f);
  CHECK(packed[0] == 0xF0);
  CHECK(packed[1] == ((7 << 4) | 9));
  CHECK((packed[32] >> 4) == 0);  // -2 / 2 = -1 -> code 0
  CHECK(packed[64] == ((15 << 4) | quantize_nf4(-0.5f)));
  // n odd: the last byte's low nibble encodes the zero padding (NF4 code 7, FP4 code 0).
  std::vector<std::uint8_t> p3(2);
  float am3[1];
  const float x3[3] = {0.3f, -0.1f, 0.2f};
  quantize_4bit<Code4::nf4>(x3, 3, 64, p3.data(), am3, "odd");
  CHECK(am3[0] == 0.3f);
  CHECK((p3[1] & 0x0f) == 7);
  CHECK((p3[0] >> 4) == 15);
  quantize_4bit<Code4::fp4>(x3, 3, 64, p3.data(), am3, "odd");
  CHECK((p3[1] & 0x0f) == 0);
  CHECK((p3[0] >> 4) == 0b0011);
  // An all-zero block: absmax 0, x * (1/0) = NaN -> code 0 for every element, as bnb; it
  // dequantizes to zeros.
  std::vector<float> z(64, 0.0f), zy(64, 1.0f);
  std::vector<std::uint8_t> zp(32, 0xAB);
  float zam[1];
  quantize_4bit<Code4::nf4>(z.data(), 64, 64, zp.data(), zam, "zero");
  CHECK(zam[0] == 0.0f);
  CHECK(std::all_of(zp.begin(), zp.end(), [](std::uint8_t b) { return b == 0; }));
  dequantize_4bit<Code4::nf4>(zp.data(), zam, 64, 64, zy.data());
  CHECK(std::all_of(zy.begin(), zy.end(), [](float v) { return v == 0.0f; }));
}

TEST_CASE("dequantize is code * absmax rounded once to the output type") {
  const std::vector<float> x = normal_data(1000, 21);
  for (Code4 c : {Code4::nf4, Code4::fp4}) {
    Quant4 q = quantize4(c, x.data(), 1000, 128, false, "w");
    std::vector<float> f(1000);
    std::vector<bf16> b(1000);
    std::vector<fp16> h(1000);
    dequantize4(q, f.data());
    dequantize4(q, b.data());
    dequantize4(q, h.data());
    for (int i = 0; i < 1000; ++i) {
      const std::uint8_t nib = (i & 1) ? (q.packed[std::size_t(i / 2)] & 0x0f)
                                       : (q.packed[std::size_t(i / 2)] >> 4);
      const float want = (c == Code4::nf4 ? nf4_code[nib] : fp4_code[nib]) * q.absmax[std::size_t(i / 128)];
      REQUIRE(f[std::size_t(i)] == want);
      REQUIRE(b[std::size_t(i)].bits == to_bf16(want).bits);
      REQUIRE(h[std::size_t(i)].bits == to_fp16(want).bits);
    }
  }
  // bf16 and fp16 inputs quantize their exact values (bf16 -> float is exact).
  std::vector<bf16> xb(1000);
  std::vector<float> xf(1000);
  for (int i = 0; i < 1000; ++i) {
    xb[std::size_t(i)] = to_bf16(x[std::size_t(i)]);
    xf[std::size_t(i)] = to_float(xb[std::size_t(i)]);
  }
  Quant4 qb = quantize4(Code4::nf4, xb.data(), 1000, 64, true, "w");
  Quant4 qf = quantize4(Code4::nf4, xf.data(), 1000, 64, true, "w");
  CHECK(qb.packed == qf.packed);
  CHECK(qb.absmax_codes == qf.absmax_codes);
  CHECK(qb.nested_absmax == qf.nested_absmax);
  CHECK(qb.offset == qf.offset);
}

TEST_CASE("double quantization: layout, hand-checked codes, reconstruction bound") {
  // 4 blocks with absmax 1, 2, 3, 6: mean 3 exactly; absmax - 3 = -2, -1, 0, 3; nested absmax
  // 3; scaled -2/3, -1/3, 0, 1 -> nearest dynamic-map codes.
  std::vector<float> x(256);
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-0.9f, 0.9f);
  for (auto& v : x) v = u(rng);
  x[0] = 1.0f;
  x[64] = -2.0f;
  x[128] = 3.0f;
  x[192] = 6.0f;
  Quant4 q = quantize4(Code4::nf4, x.data(), 256, 64, true, "dq");
  REQUIRE(q.nested);
  CHECK(q.offset == 3.0f);
  REQUIRE(q.nested_absmax.size() == 1);
  CHECK(q.nested_absmax[0] == 3.0f);
  const float s = 1.0f / 3.0f;
  CHECK(q.absmax_codes[0] == quantize_dynamic(dynamic_map, -2.0f * s));
  CHECK(q.absmax_codes[1] == quantize_dynamic(dynamic_map, -1.0f * s));
  CHECK(q.absmax_codes[2] == 127);
  CHECK(q.absmax_codes[3] == 255);
  const std::vector<float> am = q.block_absmax();
  CHECK(am[2] == 3.0f);
  CHECK(am[3] == 6.0f);  // code 255 = 1.0: 1 * 3 + 3
  CHECK(std::fabs(am[0] - 1.0f) < 3.0f * 0.0071f);
  // On random weights: the decoded absmax is within half a dynamic-map step (<= 0.71% of the
  // 256-block's max deviation) of the true absmax, and storage is 4.127 bits per parameter.
  const std::vector<float> w = normal_data(64 * 4096, 99);
  Quant4 plain = quantize4(Code4::nf4, w.data(), std::int64_t(w.size()), 64, false, "w");
  Quant4 dq = quantize4(Code4::nf4, w.data(), std::int64_t(w.size()), 64, true, "w");
  CHECK(plain.packed == dq.packed);  // DQ changes only the scales
  const std::vector<float> dam = dq.block_absmax();
  for (std::size_t b = 0; b < dam.size(); ++b)
    REQUIRE(std::fabs(dam[b] - plain.absmax[b]) <= 0.00704f * dq.nested_absmax[b / 256] + 1e-9f);
  CHECK(dq.absmax_codes.size() == 4096);
  CHECK(dq.nested_absmax.size() == 16);
  CHECK(double(dq.storage_bytes()) * 8.0 / double(w.size()) == doctest::Approx(4.127).epsilon(0.001));
}

TEST_CASE("bits per parameter") {
  CHECK(bits_per_param(QuantKind::nf4, 64, true) == doctest::Approx(4.127).epsilon(0.0005));
  CHECK(bits_per_param(QuantKind::nf4, 64, false) == 4.5);
  CHECK(bits_per_param(QuantKind::fp4, 128, false) == 4.25);
  CHECK(bits_per_param(QuantKind::int8, 64, false) == 8.5);
  CHECK(bits_per_param(QuantKind::nf4, 4096, true) < 4.003);
}

TEST_CASE("round-trip error figures (normal and Student-t(3) weights, block 64)") {
  const std::size_t n = 1 << 20;
  const std::vector<float> gauss = normal_data(n, 1234);
  const std::vector<float> heavy = student_t_data(n, 4321);
  struct Row {
    const char* name;
    double normal, heavy;
  };
  const double nf4_n = rel_rms(gauss, roundtrip4(Code4::nf4, gauss, 64, false));
  const double nf4_h = rel_rms(heavy, roundtrip4(Code4::nf4, heavy, 64, false));
  const double fp4_n = rel_rms(gauss, roundtrip4(Code4::fp4, gauss, 64, false));
  const double fp4_h = rel_rms(heavy, roundtrip4(Code4::fp4, heavy, 64, false));
  const double dq_n = rel_rms(gauss, roundtrip4(Code4::nf4, gauss, 64, true));
  const double dq_h = rel_rms(heavy, roundtrip4(Code4::nf4, heavy, 64, true));
  const double i8_n = rel_rms(gauss, roundtrip_int8(gauss, 64));
  const double i8_h = rel_rms(heavy, roundtrip_int8(heavy, 64));
  const double nf4_256 = rel_rms(gauss, roundtrip4(Code4::nf4, gauss, 256, false));
  std::printf("relative RMS error, block 64 (normal / student-t3):\n"
              "  nf4     %.5f / %.5f\n  nf4+dq  %.5f / %.5f\n  fp4     %.5f / %.5f\n"
              "  int8    %.5f / %.5f\n  nf4 block 256 (normal) %.5f\n",
              nf4_n, nf4_h, dq_n, dq_h, fp4_n, fp4_h, i8_n, i8_h, nf4_256);
  // Bounds a few percent around the measured figures (docs/quantization.md): a wrong table,
  // threshold or scale moves them far more than that.
  CHECK(nf4_n == doctest::Approx(0.09198).epsilon(0.03));
  CHECK(nf4_h == doctest::Approx(0.12401).epsilon(0.03));
  CHECK(fp4_n == doctest::Approx(0.12198).epsilon(0.03));
  CHECK(fp4_h == doctest::Approx(0.18937).epsilon(0.03));
  CHECK(i8_n == doctest::Approx(0.00593).epsilon(0.03));
  CHECK(i8_h == doctest::Approx(0.01078).epsilon(0.03));
  // Orderings that must hold whatever the seed: NF4 beats FP4 on normal data, int8 beats both,
  // larger blocks are worse, DQ costs little (< 1% relative) but not nothing.
  CHECK(nf4_n < fp4_n);
  CHECK(i8_n < 0.2 * nf4_n);
  CHECK(nf4_256 > nf4_n);
  CHECK(dq_n > nf4_n);
  CHECK(dq_n < nf4_n * 1.01);
  CHECK(dq_h < nf4_h * 1.01);
}

TEST_CASE("int8 absmax: exact on the grid, symmetric, half-even rounding") {
  std::vector<float> x(64);
  for (int i = 0; i < 64; ++i) x[std::size_t(i)] = float(i - 32) / 32.0f * 1.27f;
  x[63] = 1.27f;  // absmax -> scale 100
  std::vector<std::int8_t> q(64);
  float am[1];
  quantize_int8(x.data(), 64, 64, q.data(), am, "int8");
  CHECK(am[0] == 1.27f);
  CHECK(q[63] == 127);
  CHECK(q[0] == -127);
  CHECK(q[32] == 0);
  const float h[2] = {0.5f, 1.5f};  // with absmax 127: x*1 -> ties 0.5 -> 0, 1.5 -> 2
  float big[64] = {};
  big[0] = 127.0f;
  big[1] = h[0];
  big[2] = h[1];
  quantize_int8(big, 64, 64, q.data(), am, "int8");
  CHECK(q[1] == 0);
  CHECK(q[2] == 2);
}

TEST_CASE("bad input: block sizes, NaN / Inf, naming the tensor") {
  std::vector<float> x = normal_data(300, 8);
  std::vector<std::uint8_t> p(150);
  std::vector<float> am(10);
  std::string m = error_of([&] {
    quantize_4bit<Code4::nf4>(x.data(), 300, 48, p.data(), am.data(), "model.layers.3.mlp.up_proj.weight");
  });
  CHECK(m.find("model.layers.3.mlp.up_proj.weight") != std::string::npos);
  CHECK(m.find("block size 48") != std::string::npos);
  m = error_of([&] { quantize4(Code4::fp4, x.data(), 300, 8192, true, "q_proj.weight"); });
  CHECK(m.find("q_proj.weight") != std::string::npos);
  CHECK(m.find("8192") != std::string::npos);
  x[217] = std::nanf("");
  m = error_of([&] { quantize4(Code4::nf4, x.data(), 300, 64, true, "model.layers.0.self_attn.k_proj.weight"); });
  CHECK(m.find("model.layers.0.self_attn.k_proj.weight") != std::string::npos);
  CHECK(m.find("element 217") != std::string::npos);
  CHECK(m.find("NaN") != std::string::npos);
  x[217] = 0.0f;
  x[5] = -INFINITY;
  std::vector<bf16> xb(300);
  for (int i = 0; i < 300; ++i) xb[std::size_t(i)] = to_bf16(x[std::size_t(i)]);
  m = error_of([&] { quantize4(Code4::nf4, xb.data(), 300, 64, false, "o_proj.weight"); });
  CHECK(m.find("o_proj.weight") != std::string::npos);
  CHECK(m.find("element 5") != std::string::npos);
  CHECK(m.find("Inf") != std::string::npos);
  std::vector<std::int8_t> q8(300);
  m = error_of([&] { quantize_int8(x.data(), 300, 64, q8.data(), am.data(), "down_proj.weight"); });
  CHECK(m.find("down_proj.weight") != std::string::npos);
  CHECK(m.find("Inf") != std::string::npos);
}
