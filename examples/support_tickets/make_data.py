"""Write the support-ticket example data (CC0-1.0): ``data/{train,dev,test}.jsonl``.

Synthetic customer-support tickets, written from templates by this script with a fixed seed, so
the files are the same on every machine (``python examples/support_tickets/make_data.py``
rewrites them byte for byte). Each row has:

* ``ticket``: the customer's message;
* ``category``: where it should be routed, one of billing, technical, account (route.yaml);
* ``fields``: what a support tool would extract from it, a JSON object with ``product``,
  ``order_id`` and ``amount`` (null when the message does not say) and ``urgent`` (extract.yaml).

No real person, order or product is described; any resemblance is chance.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SEED = 18
SIZES = {"train": 240, "dev": 40, "test": 40}
PRODUCTS = ["Aurora router", "Nimbus camera", "Pico speaker", "Vela watch", "Orbit tablet", "Lumen lamp"]
URGENT = ["This is urgent.", "Please fix this asap.", "I need this solved today, it is urgent."]
OPENERS = ["Hello,", "Hi team,", "Good morning,", "Hey,", ""]
CLOSERS = ["Thanks.", "Regards.", "Thank you for your help.", "", "Cheers."]

BILLING = [
    "I was charged {amount} twice for my {product} (order {order_id}). Please refund the duplicate payment.",
    "My invoice for order {order_id} shows {amount} but the {product} was on sale. Can you correct the bill?",
    "You billed my card {amount} for a {product} I returned last week, order {order_id}.",
    "The refund of {amount} for order {order_id} never reached my account.",
    "Why does my statement show an extra charge of {amount}? I only bought one {product}.",
]
TECHNICAL = [
    "My {product} keeps disconnecting from the wifi since the last update.",
    "The {product} from order {order_id} does not turn on any more, the light just blinks red.",
    "After the firmware update my {product} restarts every few minutes.",
    "The app cannot find my {product}; pairing fails with error 42.",
    "The screen of my {product} flickers when the battery is below half.",
]
ACCOUNT = [
    "I cannot log in to my account; the password reset email never arrives.",
    "Please change the email address on my account, I no longer use the old one.",
    "Someone else seems to be using my account, I see orders I did not place like {order_id}.",
    "How do I delete my account and all my data?",
    "My account was locked after too many login attempts and I need access to track my {product}.",
]
TEMPLATES = {"billing": BILLING, "technical": TECHNICAL, "account": ACCOUNT}


def ticket(rng: random.Random) -> dict:
    category = rng.choice(sorted(TEMPLATES))
    template = rng.choice(TEMPLATES[category])
    product = rng.choice(PRODUCTS)
    order_id = f"A-{rng.randint(10000, 99999)}"
    amount = round(rng.choice([19.99, 24.5, 49, 79.9, 120, 249.99, 15.75]) * rng.choice([1, 1, 2]), 2)
    urgent = rng.random() < 0.3
    body = template.format(product=product, order_id=order_id, amount=f"${amount:,.2f}")
    parts = [rng.choice(OPENERS), body, rng.choice(URGENT) if urgent else "", rng.choice(CLOSERS)]
    fields = {
        "product": product if "{product}" in template else None,
        "order_id": order_id if "{order_id}" in template else None,
        "amount": amount if "{amount}" in template else None,
        "urgent": urgent,
    }
    return {"ticket": " ".join(p for p in parts if p), "category": category, "fields": fields}


def main(out: Path = Path(__file__).parent / "data") -> None:
    rng = random.Random(SEED)
    out.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    for split, n in SIZES.items():
        rows = []
        while len(rows) < n:
            t = ticket(rng)
            if t["ticket"] not in seen:  # every message occurs once in the whole data set
                seen.add(t["ticket"])
                rows.append({"id": f"{split}-{len(rows):03d}", **t})
        with open(out / f"{split}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


if __name__ == "__main__":
    main()
