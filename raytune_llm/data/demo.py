"""A small labelled corpus the project writes itself, so the quickstart needs no download.

The texts are customer-support messages in three classes. Each message is a shared
opening, a class-specific body and a shared closing; the bodies carry the class
vocabulary (invoice, crash, courier, ...) so a small pretrained encoder learns the task
in two or three epochs, while the shared openings/closings and a few bodies that borrow
another class's words (a refund for express shipping, an app showing the wrong tracking
status) keep it from being trivial. A seeded `random.Random` makes every write of the
same seed byte-identical, which keeps prepared-data fingerprints and tests stable.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

__all__ = ["DEMO_LABELS", "DEMO_ROWS_PER_LABEL", "write_demo_corpus"]

#: The classes of the demo corpus, in the order the quickstart declares them.
DEMO_LABELS: tuple[str, ...] = ("billing", "technical", "shipping")

#: Distinct messages written per class (3 x 150 = 450 rows).
DEMO_ROWS_PER_LABEL = 150

_OPENINGS = (
    "", "Hi,", "Hello team,", "Good morning.", "Hey there,", "Quick question:",
    "I need help urgently.", "To whom it may concern,", "Hello again,", "Sorry to bother you,",
)
_CLOSINGS = (
    "", "Thanks.", "Please help.", "Any update would be appreciated.", "Thank you for your time.",
    "This is the second time I'm writing about this.", "Regards, {name}.", "Cheers, {name}",
    "Please get back to me soon.", "Thanks in advance!",
)

# Class bodies. Slots in braces are filled from _SLOTS; the last template or two of each
# class deliberately borrows words from another class (order, account, app, tracking).
_TEMPLATES: dict[str, tuple[str, ...]] = {
    "billing": (
        "I was charged {amount} twice for my {plan} subscription.",
        "My invoice for {month} shows {amount}, but my {plan} plan costs less.",
        "Can I get a refund for the {amount} charge on my {card}?",
        "The payment from my {card} was declined when I renewed the {plan} plan.",
        "Why did you bill me {amount} this month for the {plan} plan?",
        "Please update the billing address on my account before the {month} invoice.",
        "I cancelled my {plan} plan but still see a charge of {amount} on my {card} statement.",
        "There is an unexpected fee of {amount} on the receipt for my order.",
        "I paid {amount} for express delivery but the order came by standard post; please refund it.",
        "The app says my {plan} subscription is unpaid although my {card} was charged {amount}.",
    ),
    "technical": (
        "The app crashes every time I open the {feature} screen on my {device}.",
        "I keep getting error {code} when I try to {action}.",
        "After the latest update, {feature} stopped working on my {device}.",
        "I cannot log in to my account; the password reset link gives error {code}.",
        "The {feature} page loads forever on my {device} and then shows a blank screen.",
        "Sync fails with error {code} whenever I {action}.",
        "My {device} shows a connection timeout when I {action}.",
        "The {feature} button does nothing since I installed version {version}.",
        "The app shows the wrong tracking status and freezes on my {device} with error {code}.",
        "I get error {code} on the payment page when I try to {action}.",
    ),
    "shipping": (
        "My package with tracking number {tracking} has not moved for {days} days.",
        "The order was supposed to arrive on {weekday} but the courier never came.",
        "The box arrived damaged and the {item} inside is broken.",
        "Can you change the delivery address for order {order} to my {place}?",
        "The tracking page says delivered, but there is no parcel at my {place}.",
        "How long does express shipping to {country} usually take for a {item}?",
        "I received the wrong {item} in the parcel for order {order}.",
        "The courier left my parcel at the {place} instead of handing it to me.",
        "Order {order} has been stuck in customs in {country} for {days} days.",
        "I was told the {item} would ship on {weekday}, but my account still shows order {order} as pending.",
    ),
}

_SLOTS: dict[str, tuple[str, ...]] = {
    "amount": ("$9.99", "$19.99", "$49", "$120", "EUR 12.50", "GBP 30", "$4.50", "$250"),
    "plan": ("basic", "premium", "family", "business", "annual", "monthly", "student"),
    "month": ("January", "February", "March", "April", "May", "June", "July", "August",
              "September", "October", "November", "December"),
    "card": ("credit card", "debit card", "PayPal account", "company card", "bank account"),
    "feature": ("settings", "dashboard", "login", "upload", "notifications", "search", "profile"),
    "device": ("iPhone", "Android phone", "Windows laptop", "Mac", "tablet", "Chromebook"),
    "code": ("E401", "500", "E-1023", "0x80070005", "403", "E17", "502", "E-77"),
    "action": ("upload a photo", "export my data", "sign in", "connect to Wi-Fi", "open a file",
               "save my settings", "install the update"),
    "version": ("3.2.1", "4.0", "2.9.8", "5.1", "4.0.2"),
    "tracking": ("1Z999AA10123456784", "JD014600006281", "RB123456785GB", "9400110898825022579493",
                 "LX208614575DE", "CP045213987CN"),
    "days": ("3", "4", "5", "6", "7", "9", "10", "12", "14"),
    "weekday": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"),
    "item": ("headphones", "charger", "blender", "jacket", "lamp", "phone case", "keyboard", "kettle"),
    "order": ("#A1023", "#B5531", "#C2290", "#D7814", "#E3302", "#F9917", "#G4406"),
    "place": ("office", "front door", "neighbour's house", "back porch", "apartment lobby", "reception"),
    "country": ("Canada", "Germany", "Japan", "Australia", "Brazil", "Spain", "Norway"),
    "name": ("Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Gus", "Hana"),
}


def _fill(template: str, rng: random.Random) -> str:
    """`template` with every {slot} replaced by a random filler of that slot."""
    values = {slot: rng.choice(options) for slot, options in _SLOTS.items()}
    return template.format(**values)


def _messages(label: str, count: int, rng: random.Random) -> list[str]:
    """`count` distinct messages of class `label`, in the order they were drawn."""
    seen: dict[str, None] = {}  # insertion-ordered set, so the output order is reproducible
    attempts = 0
    while len(seen) < count:
        attempts += 1
        if attempts > count * 100:  # the slot space is far larger; this only guards edits
            raise RuntimeError(f"demo corpus: cannot draw {count} distinct '{label}' messages")
        parts = (_fill(rng.choice(_OPENINGS), rng), _fill(rng.choice(_TEMPLATES[label]), rng),
                 _fill(rng.choice(_CLOSINGS), rng))
        seen[" ".join(p for p in parts if p)] = None
    return list(seen)


def write_demo_corpus(path: str | Path, seed: int = 0) -> Path:
    """Write the demo corpus as JSON lines (`id`, `text`, `label`) to `path` and return it.

    The same `seed` always gives a byte-identical file. Parent directories are created;
    if `path` is an existing directory the file is written inside it as `demo_corpus.jsonl`.
    """
    target = Path(path)
    if target.is_dir():
        target = target / "demo_corpus.jsonl"
    rng = random.Random(seed)
    rows = [(text, label) for label in DEMO_LABELS for text in _messages(label, DEMO_ROWS_PER_LABEL, rng)]
    rng.shuffle(rows)  # interleave classes so any prefix of the file is balanced-ish
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", encoding="utf-8", newline="\n") as handle:
        for index, (text, label) in enumerate(rows):
            record = {"id": f"demo-{index:04d}", "text": text, "label": label}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return target
