"""Optional PII redaction: e-mail addresses, IBANs, payment card numbers, phone numbers.

Plain functions over strings and column batches; nothing here imports Ray. Each
hit is replaced by a placeholder (`[EMAIL]`, `[IBAN]`, `[CARD]`, `[PHONE]`) and
counted, so a prepare report can say what was removed without showing it.

The corpora this runs on are full of numbers that are not PII (years, prices,
percentages, share counts, dates), so every detector trades recall for
precision: IBANs must pass their country's length and the ISO 13616 mod-97
check, card numbers the Luhn check, an issuer prefix and a card-like grouping,
and a phone number needs a leading `+country`, a trunk `0`, the North American
3-3-4 shape or a word such as "tel" right before it. Obfuscated addresses
("name at example.com") and bare local numbers without context are not caught.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from typing import overload

import pyarrow as pa

KINDS: tuple[str, ...] = ("email", "iban", "card", "phone")
PLACEHOLDERS: dict[str, str] = {"email": "[EMAIL]", "iban": "[IBAN]", "card": "[CARD]", "phone": "[PHONE]"}

# IBAN length per country (SWIFT IBAN registry). A country outside this table, or a
# number of the wrong length for its country, is not an IBAN.
_IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21,
    "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28,
    "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22,
    "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25,
    "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}

_EMAIL = re.compile(r"(?<![\w.+%'-])[\w.+%'-]+@(?:[^\W_](?:[\w-]*[^\W_])?\.)+[A-Za-z]{2,24}(?![\w-])")
# Country code, check digits, then alphanumerics in the usual groups of four. The
# match may run on into a following word; `_iban_sub` keeps only the country's length.
_IBAN = re.compile(r"(?<![\w-])[A-Z]{2}\d{2}(?:[ -]?[A-Za-z0-9]){11,30}")
# Card numbers as printed: 13-19 digits in one run, 4-4-4-4(-1..3), 4-4-4-1..4, or
# the 4-6-4/5 layout of Amex and Diners. A list of years ("2007 2008 2009 2010")
# has the 4-4-4-4 shape, hence the issuer-prefix and Luhn checks after the match.
_CARD = re.compile(
    r"(?<![\w.,+-])(?:\d{13,19}|\d{4}([ -])\d{4}\1\d{4}\1\d{1,4}(?:\1\d{1,3})?|\d{4}([ -])\d{6}\2\d{4,5})"
    r"(?![\w%]|[.,]\d)"
)
_SEP = r"[ \-./()\u2010-\u2015\ufffd]"  # U+FFFD: dashes lost to a bad encoding in real exports
# Not inside a word or a longer number ("59 087 901 620" is one 11-digit business id).
_NOT_BEFORE = r"(?<![\w.,/+-])(?<!\d[ -])"
_NOT_AFTER = r"(?![\w%]|[.,/-]\d)"  # not glued to a word, a percent sign or a longer number
# (pattern, fewest digits, most digits); only the `number` group is replaced.
_PHONES: tuple[tuple[re.Pattern[str], int, int], ...] = (
    # International: +country and 8-15 digits in all (E.164 allows at most 15).
    (re.compile(rf"(?<![\w+])(?P<number>\+\d(?:{_SEP}{{0,3}}\d){{7,14}}){_NOT_AFTER}"), 8, 15),
    # A number right after a word that announces one: 6-15 digits in any grouping.
    (re.compile(rf"(?i:\b(?:tel|telephone|phone|fax|mobile|mob|cell|gsm)\b\.?\s*(?::|no\.?)?\s*)"
                rf"(?P<number>\(?\d(?:{_SEP}{{0,3}}\d){{5,14}}){_NOT_AFTER}"), 6, 15),
    # National with a trunk 0 (020 7946 0958, 09 1234 5678, 01 23 45 67 89). No dots or
    # slashes as separators: 01.03.2008 and 01/03/2008 are dates; 9+ digits rules out 01-03-2008.
    (re.compile(rf"{_NOT_BEFORE}(?P<number>\(?0\d{{1,4}}\)?(?:[ -]\d{{2,8}}){{1,4}}){_NOT_AFTER}"), 9, 12),
    # North American 3-3-4 with one consistent separator, or (555) 123-4567.
    (re.compile(rf"{_NOT_BEFORE}(?P<number>\(\d{{3}}\) ?\d{{3}}[-. ]\d{{4}}"
                rf"|\d{{3}}(?P<sep>[-. ])\d{{3}}(?P=sep)\d{{4}}){_NOT_AFTER}"), 10, 10),
)
_DIGIT = re.compile(r"\d")


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check used by payment card numbers."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    """ISO 13616: known country, that country's length, and mod-97 of the rearranged number is 1."""
    compact = re.sub(r"[ -]", "", iban).upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]+", compact) or _IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def _card_like(digits: str) -> bool:
    # Issuer prefixes in use (ISO/IEC 7812): 2 (Mir, Mastercard 2221-2720), 3 (Amex,
    # Diners, JCB), 4 (Visa), 5 (Mastercard), 6 (Discover, UnionPay, Maestro).
    prefix_ok = digits[0] in "3456" or 2200 <= int(digits[:4]) <= 2720
    return 13 <= len(digits) <= 19 and prefix_ok and luhn_valid(digits)


def _iban_sub(match: re.Match[str], hits: dict[str, int]) -> str:
    """Redact the IBAN at the start of `match`, keeping whatever the regex ran on into."""
    text = match.group(0)
    length = _IBAN_LENGTHS.get(text[:2])
    taken, end = 0, 0
    while end < len(text) and length is not None and taken < length:  # to the length-th alphanumeric
        taken += text[end].isalnum()
        end += 1
    rest = text[end:]
    if length is None or taken < length or rest[:1].isalnum() or not iban_valid(text[:end]):
        return text
    hits["iban"] += 1
    return PLACEHOLDERS["iban"] + _IBAN.sub(lambda m: _iban_sub(m, hits), rest)


def _phone_sub(match: re.Match[str], low: int, high: int, hits: dict[str, int]) -> str:
    """Replace the `number` group of `match` if its digit count fits the pattern."""
    digits = len(_DIGIT.findall(match.group("number")))
    if not low <= digits <= high:
        return match.group(0)
    hits["phone"] += 1
    head = match.group(0)[: match.start("number") - match.start(0)]
    return head + PLACEHOLDERS["phone"] + match.group(0)[match.end("number") - match.start(0) :]


def _card_sub(match: re.Match[str], hits: dict[str, int]) -> str:
    if not _card_like(re.sub(r"\D", "", match.group(0))):
        return match.group(0)
    hits["card"] += 1
    return PLACEHOLDERS["card"]


def _email_sub(match: re.Match[str], hits: dict[str, int]) -> str:
    hits["email"] += 1
    return PLACEHOLDERS["email"]


def redact_text(text: str, kinds: Iterable[str] = KINDS) -> tuple[str, dict[str, int]]:
    """`text` with each PII hit of the chosen kinds replaced, and the hits per kind.

    Kinds run in the order of `KINDS`: an IBAN or a card number is taken before the
    phone patterns can claim its digits, and an e-mail address before either.
    """
    wanted = set(kinds)
    if unknown := wanted - set(KINDS):
        raise ValueError(f"unknown PII kinds {sorted(unknown)}; choose from {list(KINDS)}")
    hits = dict.fromkeys(KINDS, 0)
    if "email" in wanted and "@" in text:
        text = _EMAIL.sub(lambda m: _email_sub(m, hits), text)
    if not _DIGIT.search(text):  # every other kind needs digits; most sentences stop here
        return text, hits
    if "iban" in wanted:
        text = _IBAN.sub(lambda m: _iban_sub(m, hits), text)
    if "card" in wanted:
        text = _CARD.sub(lambda m: _card_sub(m, hits), text)
    if "phone" in wanted:
        for pattern, low, high in _PHONES:
            text = pattern.sub(functools.partial(_phone_sub, low=low, high=high, hits=hits), text)
    return text, hits


@overload
def redact_batch(texts: Sequence[str], kinds: Iterable[str] = KINDS) -> tuple[list[str], dict[str, int]]: ...


@overload
def redact_batch(
    texts: Sequence[str | None] | pa.Array | pa.ChunkedArray, kinds: Iterable[str] = KINDS
) -> tuple[list[str | None], dict[str, int]]: ...


def redact_batch(
    texts: Sequence[str | None] | pa.Array | pa.ChunkedArray, kinds: Iterable[str] = KINDS
) -> tuple[list[str | None], dict[str, int]] | tuple[list[str], dict[str, int]]:
    """Redact a column batch (a list or a pyarrow string array); None stays None.

    Returns the new texts and the hits per kind summed over the batch, ready to be
    added up across Ray Data batches.
    """
    values = texts.to_pylist() if isinstance(texts, (pa.Array, pa.ChunkedArray)) else list(texts)
    chosen = tuple(kinds)
    totals = dict.fromkeys(KINDS, 0)
    out: list[str | None] = []
    for text in values:
        if text is None:
            out.append(None)
            continue
        redacted, counts = redact_text(text, chosen)
        out.append(redacted)
        for kind, hits in counts.items():
            totals[kind] += hits
    return out, totals
