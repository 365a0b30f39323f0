"""``resource.Quantity`` parsing and canonical printing, as the apiserver stores quantities.

A quantity written as ``1024Mi`` is read back as ``1Gi``, ``0.5`` as ``500m`` and ``1.5Gi``
as ``1536Mi``: the server decodes every Quantity and prints its canonical form. A driver
that compares what it published with what it reads back must expect that, so the fake
server canonicalises the same way (``apimachinery/pkg/api/resource`` ``CanonicalizeBytes``):
binary suffixes stay binary when the value is a whole number of at least 1024, decimal
values use the largest SI suffix with an integral mantissa, values finer than 1n round up.
An unparsable quantity is a decode error (HTTP 400), as on the real server.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

QUANTITY_REGEX = "^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
_NUMBER = re.compile(r"([+-]?)([0-9]*)(?:\.([0-9]*))?(.*)", re.DOTALL)
_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15,
            "E": 18}
_DECIMAL_SUFFIX = {exp: sfx for sfx, exp in _DECIMAL.items()}
_BINARY_SUFFIX = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]


class QuantityError(ValueError):
    """The text is not a Quantity."""


def parse(text: str) -> tuple[Fraction, str]:
    """Return the value and the format (``BinarySI``, ``DecimalSI``, ``DecimalExponent``)."""
    if not re.fullmatch(r"[+-]?[0-9.]+[eEinumkKMGTP]*[-+]?[0-9]*", text):
        raise QuantityError(f"quantities must match the regular expression '{QUANTITY_REGEX}'")
    m = _NUMBER.fullmatch(text)
    if m is None or (not m.group(2) and not m.group(3)):
        raise QuantityError(f"quantities must match the regular expression '{QUANTITY_REGEX}'")
    sign, whole, frac, suffix = m.groups()
    digits = (whole or "0") + (frac or "")
    value = Fraction(int(digits), 10 ** len(frac or ""))
    if suffix in _BINARY:
        value *= 2 ** _BINARY[suffix]
        fmt = "BinarySI"
    elif suffix in _DECIMAL:
        value *= Fraction(10) ** _DECIMAL[suffix]
        fmt = "DecimalSI"
    elif re.fullmatch(r"[eE][-+]?[0-9]+", suffix):
        value *= Fraction(10) ** int(suffix[1:])
        fmt = "DecimalExponent"
    else:
        raise QuantityError("unable to parse quantity's suffix")
    if (value * 10**9).denominator != 1:
        value = Fraction(math.ceil(value * 10**9), 10**9)
    return (-value if sign == "-" else value), fmt


def canonical(text: str) -> str:
    """The form the apiserver prints for the quantity ``text``."""
    value, fmt = parse(text)
    if value == 0:
        return "0"
    if fmt == "BinarySI" and (abs(value) < 1024 or value.denominator != 1):
        fmt = "DecimalSI"
    if fmt == "BinarySI":
        number, power = int(value), 0
        while number % 1024 == 0 and power < len(_BINARY_SUFFIX) - 1:
            number //= 1024
            power += 1
        return f"{number}{_BINARY_SUFFIX[power]}"
    # value = mantissa * 10**exponent with an integral mantissa and no trailing zeros
    exponent = -9
    mantissa = int(value * 10**9)
    while mantissa % 10 == 0:
        mantissa //= 10
        exponent += 1
    while exponent % 3:
        mantissa *= 10
        exponent -= 1
    if fmt == "DecimalSI" and exponent in _DECIMAL_SUFFIX:
        return f"{mantissa}{_DECIMAL_SUFFIX[exponent]}"
    return f"{mantissa}e{exponent}" if exponent else str(mantissa)
