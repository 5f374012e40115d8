"""PII redaction: checksums from an independent library, numbers that must survive, real news text.

Valid and invalid card numbers and IBANs are generated here and judged by
python-stdnum (its Luhn and ISO 13616 code and its copy of the SWIFT IBAN
registry), not by the module under test.
"""

from __future__ import annotations

import random
import re

import pyarrow as pa
import pytest
from stdnum import iban as stdnum_iban
from stdnum import luhn as stdnum_luhn
from stdnum import numdb

from raytune_llm.data.pii import KINDS, redact_batch, redact_text
from tests.conftest import shared_data


def _only(kind: str, hits: int = 1) -> dict[str, int]:
    return {k: (hits if k == kind else 0) for k in KINDS}


def _card(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
    number = body + str(stdnum_luhn.calc_check_digit(body))
    assert stdnum_luhn.is_valid(number)
    return number


def _grouped(number: str, sizes: tuple[int, ...], sep: str) -> str:
    parts, start = [], 0
    for size in sizes:
        parts.append(number[start : start + size])
        start += size
    return sep.join(p for p in parts if p)


CARD_LAYOUTS = [  # (issuer prefix, length, printed group sizes)
    ("4", 16, (4, 4, 4, 4)), ("4", 13, (4, 4, 4, 1)), ("4", 19, (4, 4, 4, 4, 3)), ("53", 16, (4, 4, 4, 4)),
    ("2221", 16, (4, 4, 4, 4)), ("2720", 16, (4, 4, 4, 4)), ("37", 15, (4, 6, 5)), ("34", 15, (4, 6, 5)),
    ("36", 14, (4, 6, 4)), ("6011", 16, (4, 4, 4, 4)), ("62", 19, (4, 4, 4, 4, 3)),
]


@pytest.mark.parametrize("prefix,length,sizes", CARD_LAYOUTS)
def test_luhn_valid_cards_are_redacted_and_invalid_ones_are_not(prefix: str, length: int,
                                                                 sizes: tuple[int, ...]) -> None:
    rng = random.Random(f"{prefix}-{length}")
    for _ in range(20):
        number = _card(prefix, length, rng)
        wrong = number[:-1] + str((int(number[-1]) + rng.randint(1, 9)) % 10)
        assert not stdnum_luhn.is_valid(wrong)
        for printed in (number, _grouped(number, sizes, " "), _grouped(number, sizes, "-")):
            text = f"Charge it to card {printed}, expiry next May."
            assert redact_text(text) == ("Charge it to card [CARD], expiry next May.", _only("card")), printed
            bad = text.replace(printed, printed[:-1] + wrong[-1])
            assert redact_text(bad) == (bad, _only("card", 0)), bad


def test_published_test_card_numbers_are_redacted() -> None:
    for number in ["4111 1111 1111 1111", "5555 5555 5555 4444", "3782 822463 10005", "6011-1111-1111-1117"]:
        assert stdnum_luhn.is_valid(number.replace(" ", "").replace("-", ""))
        assert redact_text(f"test card {number} ok")[0] == "test card [CARD] ok"


def test_year_lists_that_pass_luhn_are_not_cards() -> None:
    runs = [" ".join(str(y + i) for i in range(4)) for y in range(1960, 2030)]
    luhn_ok = [r for r in runs if stdnum_luhn.is_valid(r.replace(" ", ""))]
    assert luhn_ok, "some runs of four years pass the Luhn check by chance"
    for run in luhn_ok:
        text = f"Sales grew in each of the years {run} ."
        assert redact_text(text)[0] == text


def _iban_structures() -> dict[str, str]:
    """Country -> BBAN structure ("4!a6!n8!n") from python-stdnum's copy of the SWIFT registry."""
    path = numdb.__file__.replace("numdb.py", "iban.dat")
    found = {}
    with open(path, encoding="utf-8") as registry:
        for line in registry:
            match = re.match(r'([A-Z]{2}) .*bban="([^"]+)"', line)
            if match:
                found[match.group(1)] = match.group(2)
    return found


def _random_iban(country: str, structure: str, rng: random.Random) -> str:
    alphabets = {"n": "0123456789", "a": "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "c": "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"}
    bban = "".join(rng.choice(alphabets[kind]) for size, kind in re.findall(r"(\d+)!([nac])", structure)
                   for _ in range(int(size)))
    number = country + str(stdnum_iban.calc_check_digits(country + "00" + bban)) + bban
    # check_country=False: the random BBAN has no valid national check digit (BE, FR, ...),
    # which ISO 13616 does not ask for and the redactor does not check.
    assert stdnum_iban.is_valid(number, check_country=False)
    return number


def test_valid_ibans_of_every_registry_country_are_redacted() -> None:
    structures = _iban_structures()
    assert len(structures) >= 80
    rng = random.Random(5)
    for country, structure in structures.items():
        number = _random_iban(country, structure, rng)
        for printed in (number, stdnum_iban.format(number)):
            text = f"Transfer the fee to {printed} EUR 500 by Friday."
            assert redact_text(text) == ("Transfer the fee to [IBAN] EUR 500 by Friday.", _only("iban")), printed


def test_ibans_with_a_wrong_checksum_or_length_are_left_alone() -> None:
    rng = random.Random(6)
    for country, structure in _iban_structures().items():
        number = _random_iban(country, structure, rng)
        check = (int(number[2:4]) + rng.randint(1, 50)) % 97
        variants = [number[:2] + f"{check:02d}" + number[4:], number[:-1], number + "7"]
        for variant in variants:
            assert not stdnum_iban.is_valid(variant, check_country=False)
            text = f"Reference {variant} was quoted."
            assert redact_text(text, kinds=["iban"])[0] == text, variant


def test_published_example_ibans() -> None:
    examples = ["GB82 WEST 1234 5698 7654 32", "DE89 3704 0044 0532 0130 00", "FR14 2004 1010 0505 0001 3M02 606",
                "NL91 ABNA 0417 1643 00", "BE68 5390 0754 7034", "CH93 0076 2011 6238 5295 7", "NO93 8601 1117 947"]
    text = " ; ".join(examples)
    assert all(stdnum_iban.is_valid(e, check_country=False) for e in examples)
    assert redact_text(text) == (" ; ".join(["[IBAN]"] * len(examples)), _only("iban", len(examples)))
    isin = "Its shares (ISIN FI0009000681) trade in Helsinki."  # an ISIN has an IBAN-like head
    assert redact_text(isin)[0] == isin


@pytest.mark.parametrize("address", ["jane.doe@example.com", "j.o'neil+news@mail.example.co.uk",
                                     "IR-team@example-group.fi", "a_b@sub.example.org"])
def test_email_addresses_are_redacted(address: str) -> None:
    assert redact_text(f"Write to <{address}> today.") == ("Write to <[EMAIL]> today.", _only("email"))


@pytest.mark.parametrize("text", ["Follow @newsdesk for updates", "name at example.com", "a@b", "5 @ EUR 3.2"])
def test_things_that_are_not_email_addresses(text: str) -> None:
    assert redact_text(text)[0] == text


PHONES = ["+44 20 7946 0958", "+1 (555) 010-4477", "+358 40 123 4567", "+49 30 1234567", "+33 1 23 45 67 89",
          "+1 617\u2013555\u20130123", "020 7946 0958", "09 1234 5678", "040-123 4567", "01 23 45 67 89",
          "(555) 010-4477", "555-010-4477", "555.010.4477"]


@pytest.mark.parametrize("number", PHONES)
def test_phone_numbers_are_redacted(number: str) -> None:
    assert redact_text(f"For details call {number} today.") == ("For details call [PHONE] today.", _only("phone"))


@pytest.mark.parametrize("text", ["Contact Ms Virtanen , tel. 7946 0958 .", "Fax: 12 34 56 78 ."])
def test_local_numbers_after_a_phone_word_are_redacted(text: str) -> None:
    redacted, counts = redact_text(text)
    assert "[PHONE]" in redacted and counts == _only("phone") and not re.search(r"\d", redacted)


NOT_PHONES = [
    "Net sales rose 12.5 % to EUR 1,234.5 mn in 2008-2009 .",
    "The order was signed on 01.03.2008 and on 01-03-2008 , delivered on 01/04/2008 .",
    "The share capital is EUR 45,031,513.80 divided into 75,052,523 shares .",
    "Operating profit was EUR -3.5 ( +1.2 ) million , up +10.5 % , in 1-9/2008 .",
    "It employs 1 234 567 people and plans 12 345 678 more between 1995 and 2010 .",
    "Trading starts at 14.00 ; Q3 2009 results on 10.2-12.4 % margins ; order No. 2424-KOLNP-2008 .",
    "The company 's business id 59 087 901 620 is unchanged .",
    "Revenue was USD 555-600 million , and 2007 2008 2009 2010 were record years .",
]


@pytest.mark.parametrize("text", NOT_PHONES)
def test_financial_numbers_are_not_redacted(text: str) -> None:
    assert redact_text(text) == (text, _only("phone", 0))


def test_redact_batch_accepts_lists_and_arrow_and_sums_counts() -> None:
    texts = ["mail jane@example.com or call +44 20 7946 0958", None, "IBAN GB82 WEST 1234 5698 7654 32", "plain"]
    out, counts = redact_batch(pa.chunked_array([pa.array(texts[:2]), pa.array(texts[2:])]))
    assert out == ["mail [EMAIL] or call [PHONE]", None, "IBAN [IBAN]", "plain"]
    assert counts == {"email": 1, "iban": 1, "card": 0, "phone": 1}
    assert redact_batch(texts, kinds=["email"]) == (
        ["mail [EMAIL] or call +44 20 7946 0958", None, texts[2], "plain"], _only("email"))
    with pytest.raises(ValueError, match="unknown PII kinds"):
        redact_batch(texts, kinds=["ssn"])


@pytest.mark.shared_data
def test_phrasebank_is_almost_untouched() -> None:
    path = shared_data("financial_phrasebank/Sentences_50Agree.txt")
    texts = [line.rsplit("@", 1)[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    out, counts = redact_batch(texts)
    changed = [(a, b) for a, b in zip(texts, out, strict=True) if a != b]
    # Press-release footers in the corpus carry real contact numbers; a [PHONE] whose
    # preceding words announce a number is a true hit, any other is a false one.
    cue = re.compile(r"(?i)tel|phone|call|dial|fax|mobile|contact")
    false_hits = [b for _, b in changed for m in re.finditer(r"\[PHONE\]", b)
                  if not cue.search(b[max(0, m.start() - 80) : m.start()])]
    rate = len(false_hits) / len(texts)
    print(f"\nPhraseBank 50Agree: {len(changed)} of {len(texts)} rows changed, hits {counts}, "
          f"unexplained phone hits {len(false_hits)} ({rate:.4%})")
    assert counts["card"] == 0 and counts["iban"] == 0, "financial news has no card numbers or IBANs"
    assert len(changed) <= 0.01 * len(texts)
    assert rate <= 0.001, false_hits
    money = re.compile(r"\d+(?:[.,]\d+)?\s?%|(?:EUR|USD|\$)\s?-?\d[\d.,]*")
    assert sum(len(money.findall(t)) for t in texts) == sum(len(money.findall(t)) for t in out)
