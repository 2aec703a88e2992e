"""FP32, FP16 and BF16: where their range and precision come from.

A binary float has 1 sign bit, ``e`` exponent bits and ``m`` explicit mantissa bits:

$$ x = (-1)^s \\cdot 1.f \\cdot 2^{E - \\text{bias}}, \\qquad \\text{bias} = 2^{e-1} - 1 $$

The exponent bits set the *range* (largest finite value ``(2 - 2^{-m}) 2^{bias}``, smallest normal
``2^{1-bias}``); the mantissa bits set the *precision* (the gap between 1 and the next number is
``eps = 2^{-m}``, i.e. about ``m · log10 2`` significant decimal digits).

* FP32: e=8, m=23 → max ≈ 3.40e38, eps ≈ 1.19e-7.
* BF16: e=8, m=7 → the SAME exponent range as FP32 (max ≈ 3.39e38) but eps = 2^-7 ≈ 7.8e-3.
* FP16: e=5, m=10 → max = 65504, eps ≈ 9.8e-4: finer than BF16, but overflows above 65504.

The numbers below are computed from the bit layout and checked against ``torch.finfo`` in the tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class FloatFormat:
    """Bit layout of a binary floating-point format (IEEE-754 style, with subnormals)."""

    name: str
    exponent_bits: int
    mantissa_bits: int  # explicit fraction bits (the leading 1 is implicit)
    dtype: torch.dtype

    @property
    def bits(self) -> int:
        return 1 + self.exponent_bits + self.mantissa_bits

    @property
    def bias(self) -> int:
        return 2 ** (self.exponent_bits - 1) - 1

    @property
    def max(self) -> float:
        """Largest finite value: all-ones mantissa, largest non-special exponent."""
        return (2.0 - 2.0 ** -self.mantissa_bits) * 2.0**self.bias

    @property
    def smallest_normal(self) -> float:
        return 2.0 ** (1 - self.bias)

    @property
    def smallest_subnormal(self) -> float:
        return 2.0 ** (1 - self.bias - self.mantissa_bits)

    @property
    def eps(self) -> float:
        """Gap between 1.0 and the next representable number: the relative precision."""
        return 2.0**-self.mantissa_bits

    @property
    def decimal_digits(self) -> float:
        """About how many significant decimal digits the mantissa holds: ``(m + 1) log10 2``."""
        return (self.mantissa_bits + 1) * math.log10(2)

    def round(self, x: torch.Tensor) -> torch.Tensor:
        """Round float32 ``x`` to this format (round-to-nearest-even) and back to float32."""
        return x.float().to(self.dtype).float()

    def summary(self) -> dict[str, float | int | str]:
        return {
            "format": self.name,
            "bits": self.bits,
            "exponent bits": self.exponent_bits,
            "mantissa bits": self.mantissa_bits,
            "max": self.max,
            "smallest normal": self.smallest_normal,
            "eps": self.eps,
            "decimal digits": round(self.decimal_digits, 2),
        }


FP32 = FloatFormat("FP32", 8, 23, torch.float32)
BF16 = FloatFormat("BF16", 8, 7, torch.bfloat16)
FP16 = FloatFormat("FP16", 5, 10, torch.float16)
FORMATS = (FP32, BF16, FP16)


def float_bits(x: float, fmt: FloatFormat) -> str:
    """The bit pattern of ``x`` rounded to ``fmt``, as ``'s eeeeeeee mmmmmmm'``."""
    t = torch.tensor([x], dtype=torch.float32).to(fmt.dtype)
    int_dtype = {32: torch.int32, 16: torch.int16}[fmt.bits]
    raw = int(t.view(int_dtype).item()) & ((1 << fmt.bits) - 1)
    s = format(raw, f"0{fmt.bits}b")
    e = fmt.exponent_bits
    return f"{s[0]} {s[1 : 1 + e]} {s[1 + e :]}"
