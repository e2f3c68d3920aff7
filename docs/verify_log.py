#!/usr/bin/env python3
"""Re-verify an exported RCM compliance log offline.

Usage: python3 verify_log.py EXPORT.jsonl

EXPORT.jsonl is what `rcmctl log export` writes: one entry a line. For each
account in the file, the entries must come in seq order 1, 2, 3..., each
prevHash must be the hash of the entry before (64 zeros for the first), and
each hash must equal

    sha256(prevHash + canonical(entry without prevHash and hash))

where canonical is RFC 8785 JSON (the JSON Canonicalization Scheme): object
keys sorted by their UTF-16 code units, no whitespace, strings as
json.dumps(..., ensure_ascii=False) writes them, and numbers as IEEE 754
doubles written the way ECMAScript's Number.prototype.toString writes them
(see number() below). Prints one line per account and exits 1 if any chain
is broken.
"""
import decimal
import hashlib
import json
import math
import sys

HASHED = ("eventId", "accountId", "seq", "eventType", "documentId",
          "campaignId", "actor", "data", "occurredAt", "recordedAt")


def number(x):
    """An integer or float as RFC 8785 (ECMAScript) writes it: the shortest
    digits that round-trip the double, in plain notation from 1e-6 up to
    below 1e21 and in exponent notation (1e+21, 5e-7) outside."""
    x = float(x)  # integers too: JSON numbers are doubles
    if math.isnan(x) or math.isinf(x):
        raise ValueError("number out of the range of a double")
    if x == 0:
        return "0"  # -0 too
    sign = "-" if x < 0 else ""
    # repr gives the shortest round-tripping digits, as ECMAScript does.
    _, digits, exp = decimal.Decimal(repr(abs(x))).as_tuple()
    s = "".join(map(str, digits)).rstrip("0")
    k = len(s)
    n = len(digits) + exp  # the value is 0.s * 10**n
    if k <= n <= 21:
        out = s + "0" * (n - k)
    elif 0 < n <= 21:
        out = s[:n] + "." + s[n:]
    elif -6 < n <= 0:
        out = "0." + "0" * -n + s
    else:
        e = n - 1
        out = (s if k == 1 else s[0] + "." + s[1:]) + "e" + ("+" if e > 0 else "-") + str(abs(e))
    return sign + out


def canonical(v):
    if v is None or isinstance(v, bool):
        return json.dumps(v)
    if isinstance(v, (int, float)):
        return number(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ",".join(canonical(x) for x in v) + "]"
    keys = sorted(v, key=lambda k: k.encode("utf-16-be"))
    return "{" + ",".join(canonical(k) + ":" + canonical(v[k]) for k in keys) + "}"


def unique_keys(pairs):
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate key")
    return obj


def main(path):
    chains = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            e = json.loads(line, object_pairs_hook=unique_keys)
            c = chains.setdefault(e["accountId"], {"seq": 0, "hash": "0" * 64, "broken": None})
            if c["broken"] is not None:
                continue
            want = c["seq"] + 1
            body = {k: e[k] for k in HASHED}
            try:
                digest = hashlib.sha256((e["prevHash"] + canonical(body)).encode("utf-8")).hexdigest()
            except ValueError:  # also UnicodeEncodeError, a lone surrogate
                digest = None
            if e["seq"] != want or e["prevHash"] != c["hash"] or digest != e["hash"]:
                c["broken"] = min(e["seq"], want)
                continue
            c["seq"], c["hash"] = e["seq"], e["hash"]
    broken = 0
    for account, c in chains.items():
        if c["broken"] is None:
            print(f"{account}: ok, {c['seq']} entries, head {c['hash']}")
        else:
            broken += 1
            print(f"{account}: BROKEN at seq {c['broken']}")
    return 1 if broken else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
