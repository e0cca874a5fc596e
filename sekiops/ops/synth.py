"""Synthetic projector states: realistic read-model JSON written as a stream, never held whole.

Customers with ids, names, e-mails, tags, addresses and nested orders, as a typical Sekiban
multi-projection (a dictionary of aggregates) serialises them. It compresses about 4-6x with
fast gzip, like real projections. A pool of distinct items (larger than gzip's 32 KiB window)
is generated once and cycled with a changing id prefix, so gigabytes come out at disk speed.
"""

from __future__ import annotations

import json
import random

from ..streams import Writable

_FIRST = ["Aiko", "Ben", "Chen", "Dana", "Eitan", "Fatima", "Goro", "Hana", "Ivan", "Jun", "Kenji", "Lena",
          "Mika", "Noah", "Olga", "Priya", "Quinn", "Rin", "Sora", "Taro", "Uma", "Vera", "Wen", "Yuki"]
_LAST = ["Sato", "Suzuki", "Takahashi", "Tanaka", "Watanabe", "Ito", "Yamamoto", "Nakamura", "Kobayashi",
         "Kato", "Smith", "Garcia", "Muller", "Rossi", "Nguyen", "Kim", "Silva", "Novak"]
_CITIES = ["Tokyo", "Osaka", "Nagoya", "Sapporo", "Fukuoka", "Kobe", "Kyoto", "Sendai", "Yokohama", "Naha"]
_TAGS = ["vip", "wholesale", "retail", "overdue", "new", "churn-risk", "loyalty", "b2b", "campaign-2026"]
_SKUS = [f"SKU-{i:05d}" for i in range(0, 5000, 7)]
POOL_ITEMS = 20_000
MARK = b"@@@@"


def _item(rng: random.Random, n: int) -> dict:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    orders = []
    for _ in range(rng.randint(0, 4)):
        lines = [{"sku": rng.choice(_SKUS), "quantity": rng.randint(1, 20),
                  "unitPrice": round(rng.uniform(1, 500), 2)} for _ in range(rng.randint(1, 5))]
        orders.append({"orderId": f"{rng.getrandbits(64):016x}",
                       "status": rng.choice(["Placed", "Paid", "Shipped", "Closed"]),
                       "placedAt": f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:"
                                   f"{rng.randint(0, 59):02d}:00Z", "lines": lines})
    return {
        "customerId": f"{MARK.decode()}{n:06d}-{rng.getrandbits(48):012x}",
        "name": f"{first} {last}",
        "email": f"{first.lower()}.{last.lower()}{rng.randint(1, 999)}@example.co.jp",
        "city": rng.choice(_CITIES),
        "tags": rng.sample(_TAGS, rng.randint(0, 3)),
        "balance": round(rng.uniform(-1000, 100000), 2),
        "isActive": rng.random() > 0.1,
        "orders": orders,
    }


def item_pool(seed: int = 42, items: int = POOL_ITEMS) -> list[bytes]:
    rng = random.Random(seed)
    return [json.dumps(_item(rng, i), separators=(",", ":")).encode() for i in range(items)]


def write_state(out: Writable, target_bytes: int, seed: int = 42) -> int:
    """Write about ``target_bytes`` of projector state JSON to ``out``; returns the exact count."""
    pool = item_pool(seed)
    head = b'{"$type":"Demo.CustomerDirectoryProjector","customers":['
    tail_tpl = '],"summary":{"customerCount":%d,"generatedBy":"sekiops synth"}}'
    written = 0
    out.write(head)
    written += len(head)
    count = 0
    rnd = 0
    block_items = 500
    full = False
    while not full:
        prefix = b"%04x" % (rnd % 65536)
        for start in range(0, len(pool), block_items):
            block = b",".join(pool[start:start + block_items]).replace(MARK, prefix)
            if count:
                block = b"," + block
            budget = target_bytes - 80 - written
            if len(block) > budget:
                cut = block.rfind(b',{"customerId"', 0, budget) if budget > 0 else -1
                block = block[:cut] if cut > 0 else b""
                full = True
            if block:
                out.write(block)
                written += len(block)
                count += block.count(b'{"customerId"')
            if full:
                break
        rnd += 1
    tail = (tail_tpl % count).encode()
    out.write(tail)
    return written + len(tail)
