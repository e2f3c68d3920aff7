#!/usr/bin/env python3
"""Re-verify an exported RCM compliance log offline.

Usage: python3 verify_log.py EXPORT.jsonl

EXPORT.jsonl is what `rcmctl log export` writes: one entry a line. For each
account in the file, the entries must come in seq order 1, 2, 3..., each
prevHash must be the hash of the entry before (64 zeros for the first), and
each hash must equal

    sha256(prevHash + canonical(entry without prevHash and hash))

where canonical is RFC 8785 JSON, which for these entries is exactly
json.dumps(..., sort_keys=True, separators=(",", ":"), ensure_ascii=False).
Prints one line per account and exits 1 if any chain is broken.
"""
import hashlib
import json
import sys

HASHED = ("eventId", "accountId", "seq", "eventType", "documentId",
          "campaignId", "actor", "data", "occurredAt", "recordedAt")


def canonical(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def main(path):
    chains = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            e = json.loads(line)
            c = chains.setdefault(e["accountId"], {"seq": 0, "hash": "0" * 64, "broken": None})
            if c["broken"] is not None:
                continue
            want = c["seq"] + 1
            body = {k: e[k] for k in HASHED}
            digest = hashlib.sha256((e["prevHash"] + canonical(body)).encode("utf-8")).hexdigest()
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
