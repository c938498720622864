"""A scalar as PHP 8's ``echo`` prints it: what the drush router sent back for a job's return value.

Drupal code tests a job's result for truthiness (``if (islandora_job_submit(...))``), so a Python job must answer
as the PHP job did: ``TRUE`` → ``"1"``, ``FALSE`` and ``NULL`` → ``""`` (PHP's ``"false"`` would be true), integers
in decimal, floats with the ``precision`` setting's 14 significant digits, laid out as PHP's ``zend_gcvt`` does
(``1.0`` → ``1``, ``1e20`` → ``1.0E+20``, ``0.00001`` → ``1.0E-5``, ``inf`` → ``INF``). Python's ``'e'`` format
rounds with the same correctly rounded dtoa (David Gay's, mode 2) as PHP, so only the layout is done here.
``tests/integration/test_php_echo.py`` compares every rule with the real ``php``.
"""

from __future__ import annotations

import math
from typing import Final

#: PHP's default ``precision`` ini setting: significant digits of a float converted to a string.
PRECISION: Final = 14


def echo(value: bool | int | float | None) -> bytes:
    """The bytes PHP's ``echo`` gives for a scalar of the same value."""
    if value is None or value is False:
        return b""
    if value is True:
        return b"1"
    if isinstance(value, int):
        return str(value).encode("ascii")
    return php_float(value).encode("ascii")


def php_float(value: float) -> str:
    """``(string) $float`` in PHP 8 with ``precision = 14`` (``zend_gcvt(value, 14, '.', 'E')``)."""
    if math.isnan(value):
        return "NAN"
    if math.isinf(value):
        return "-INF" if value < 0 else "INF"
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        return sign + "0"
    mantissa, _, exponent = f"{abs(value):.{PRECISION - 1}e}".partition("e")
    digits = mantissa.replace(".", "").rstrip("0")
    point = int(exponent) + 1  # digits are 0.d1d2... times 10**point, zend_dtoa's decpt
    if point < -3 or point > PRECISION:
        # "1.0E+20": one digit, the point, the rest (or 0), E, the exponent's sign and its digits
        power = point - 1
        return f"{sign}{digits[0]}.{digits[1:] or '0'}E{'-' if power < 0 else '+'}{abs(power)}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    whole, fraction = digits[:point].ljust(point, "0"), digits[point:]
    return f"{sign}{whole}.{fraction}" if fraction else f"{sign}{whole}"
