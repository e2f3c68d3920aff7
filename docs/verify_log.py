#!/usr/bin/env python3
"""Re-verify an exported RCM compliance log offline.

Usage: python3 verify_log.py EXPORT.jsonl [--key VKEY] [--checkpoint FILE]...
                                          [--witness WVKEY]...
       python3 verify_log.py --proof RECEIPT... --key VKEY [--witness WVKEY]...

EXPORT.jsonl is what `rcmctl log export` writes: one entry a line. For each
account in the file, the entries must come in seq order 1, 2, 3..., each
prevHash must be the hash of the entry before (64 zeros for the first), and
each hash must equal

    sha256(prevHash + canonical(entry without prevHash and hash))

The script also computes each account's RFC 6962 Merkle tree: leaf i is
canonical(entry seq i+1 with exactly its 12 fields, prevHash and hash
included), leaf hash sha256(0x00 + leaf), node hash sha256(0x01 + left +
right). With --key (the log's verifier key, <name>+<id>+base64(0x01 + key),
from GET /v1/compliance-log/verifier-key) it checks each checkpoint given
with --checkpoint, or ACCOUNT.checkpoint beside the export: the Ed25519
signature of the log under the checkpoint's origin (<prefix>/<accountId>)
and that the export's tree at the checkpoint's size has the checkpoint's
root, i.e. the export holds the history the checkpoint signed, perhaps
extended. With --witness (a witness verifier key, type 0x04) each checkpoint
must also carry that witness's cosignature/v1. Ed25519 comes from the
`cryptography` package (pip install cryptography, or Debian's
python3-cryptography); the rest is the standard library.

where canonical is RFC 8785 JSON (the JSON Canonicalization Scheme): object
keys sorted by their UTF-16 code units, no whitespace, strings as
json.dumps(..., ensure_ascii=False) writes them, and numbers as IEEE 754
doubles written the way ECMAScript's Number.prototype.toString writes them
(see number() below). Prints one line per account and exits 1 if any chain
is broken or any checkpoint fails.

With --proof (repeatable), it checks an entry's receipt alone (what `rcmctl log proof`
prints, a c2sp.org/tlog-proof@v1): the checkpoint inside signed by the
account's key VKEY (its name must be the checkpoint's origin) and cosigned
by each --witness, the inclusion proof of the leaf in `extra` against the
checkpoint's root (RFC 9162 section 2.1.3.2), and that leaf being the
account's entry at seq index+1 with a hash that holds. It prints the entry,
or FAILED and why, exiting 1.
"""
import argparse
import base64
import decimal
import hashlib
import json
import math
import os
import struct
import sys

HASHED = ("eventId", "accountId", "seq", "eventType", "documentId",
          "campaignId", "actor", "data", "occurredAt", "recordedAt")
LEAF = HASHED + ("prevHash", "hash")


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


def leaf_hash(e):
    data = canonical({k: e[k] for k in LEAF}).encode("utf-8")
    return hashlib.sha256(b"\x00" + data).digest()


def tree_root(leaves):
    """RFC 6962 Merkle tree hash of a list of leaf hashes."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    level = list(leaves)
    while len(level) > 1:
        # Pairing from the left, carrying an odd last node up unchanged,
        # builds exactly RFC 6962's tree (split at the largest power of 2).
        nxt = [hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest()
               for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def key_id(name, key_bytes):
    return hashlib.sha256(name.encode("utf-8") + b"\n" + key_bytes).digest()[:4]


def parse_vkey(vkey, alg):
    """(name, public key) of a note verifier key <name>+<id hex>+<base64>."""
    name, kid, b64 = vkey.strip().split("+", 2)
    raw = base64.b64decode(b64, validate=True)
    if len(raw) != 33 or raw[0] != alg:
        raise ValueError(f"not an Ed25519 verifier key of type {alg:#04x}")
    if key_id(name, raw).hex() != kid:
        raise ValueError("the key id does not match the key")
    return name, raw[1:]


def ed25519_ok(pub, sig, msg):
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    try:
        Ed25519PublicKey.from_public_bytes(pub).verify(sig, msg)
        return True
    except InvalidSignature:
        return False


def signatures(note):
    """The text of a signed note and its signature lines as (name, raw)."""
    text, sep, sigs = note.partition("\n\n")
    if not sep:
        raise ValueError("no signature lines")
    text += "\n"
    out = []
    for line in sigs.splitlines():
        if not line.startswith("\u2014 "):
            raise ValueError("a signature line does not start with an em dash")
        name, b64 = line[2:].rsplit(" ", 1)
        out.append((name, base64.b64decode(b64, validate=True)))
    return text, out


def check_checkpoint(path, log_pub, witnesses, trees):
    """(account or None, reason or None) of one checkpoint file."""
    with open(path, encoding="utf-8") as f:
        note = f.read()
    text, sigs = signatures(note)
    lines = text.split("\n")
    origin, size, root = lines[0], int(lines[1]), base64.b64decode(lines[2], validate=True)
    account = origin.rsplit("/", 1)[-1]
    if "/" not in origin or account not in trees:
        return None, f"origin {origin!r} is of no account in the export"
    reason = signature_problem(text, sigs, origin, log_pub, witnesses)
    if reason:
        return account, reason
    leaves = trees[account]
    if size > len(leaves):
        return account, f"the export holds {len(leaves)} entries, fewer than the checkpoint's {size}"
    if tree_root(leaves[:size]) != root:
        return account, f"the export's tree at size {size} is not the checkpoint's: the log was rewritten"
    return account, None


def signature_problem(text, sigs, origin, log_pub, witnesses):
    """Why a checkpoint's signatures do not hold, or None: the log's Ed25519
    signature under origin, and each witness's cosignature/v1."""
    kid = key_id(origin, b"\x01" + log_pub)
    if not any(n == origin and raw[:4] == kid and ed25519_ok(log_pub, raw[4:], text.encode("utf-8"))
               for n, raw in sigs):
        return "no valid signature of the log's key"
    for wname, wpub in witnesses:
        wid = key_id(wname, b"\x04" + wpub)
        ok = False
        for n, raw in sigs:
            if n == wname and raw[:4] == wid and len(raw) == 4 + 8 + 64:
                t = struct.unpack(">Q", raw[4:12])[0]
                msg = f"cosignature/v1\ntime {t}\n{text}".encode("utf-8")
                ok = ok or ed25519_ok(wpub, raw[12:], msg)
        if not ok:
            return f"no valid cosignature of witness {wname}"
    return None


def inclusion_root(index, size, leaf, path):
    """The root an RFC 9162 inclusion proof (section 2.1.3.2) of the leaf
    hash at index in a tree of size leads to, or None when it cannot."""
    if index >= size:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = hashlib.sha256(b"\x01" + p + r).digest()
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = hashlib.sha256(b"\x01" + r + p).digest()
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def check_proof(path, vkey, witnesses):
    """(entry, summary, None) of a receipt (a c2sp.org/tlog-proof@v1 as
    `rcmctl log proof` prints it), or (None, None, reason) when it does not
    check: the checkpoint's signatures, the inclusion proof of the leaf in
    extra against its root, and that leaf being the entry of the
    checkpoint's account at seq index+1 with a hash that holds."""
    with open(path, encoding="utf-8") as f:
        raw = f.read()
    head, sep, note = raw.partition("\n\n")
    lines = head.split("\n")
    if not sep or lines[0] != "c2sp.org/tlog-proof@v1":
        return None, None, "not a c2sp.org/tlog-proof@v1"
    lines = lines[1:]
    extra = None
    try:
        if lines and lines[0].startswith("extra "):
            extra = base64.b64decode(lines.pop(0)[6:], validate=True)
        if not lines or not lines[0].startswith("index "):
            return None, None, "no index line"
        index = int(lines[0][6:])
        proof = [base64.b64decode(x, validate=True) for x in lines[1:]]
        text, sigs = signatures(note)
        origin, size, root = text.split("\n")[:3]
        size, root = int(size), base64.b64decode(root, validate=True)
    except ValueError as e:
        return None, None, f"not a c2sp.org/tlog-proof@v1: {e}"
    name, log_pub = vkey
    if name != origin:
        return None, None, f"the checkpoint is of {origin!r}, the key of {name!r}"
    reason = signature_problem(text, sigs, origin, log_pub, witnesses)
    if reason:
        return None, None, reason
    if extra is None:
        return None, None, "no extra line: the receipt does not carry the entry"
    if any(len(p) != 32 for p in proof) or inclusion_root(index, size, hashlib.sha256(b"\x00" + extra).digest(), proof) != root:
        return None, None, f"the inclusion proof of index {index} does not verify against the checkpoint's root"
    account = origin.rsplit("/", 1)[-1]
    try:
        e = json.loads(extra, object_pairs_hook=unique_keys)
        if e["accountId"] != account or e["seq"] != index + 1:
            return None, None, f"the entry is seq {e['seq']} of {e['accountId']}, the proof is of index {index} of {account}"
        digest = hashlib.sha256((e["prevHash"] + canonical({k: e[k] for k in HASHED})).encode("utf-8")).hexdigest()
    except (ValueError, KeyError, TypeError) as err:
        return None, None, f"extra is not an entry: {err}"
    if digest != e["hash"]:
        return None, None, "the entry's hash is not the hash of its fields"
    return e, f"entry {index + 1} of {account} is in the log's tree of {size} entries signed by {origin}", None


def main(argv):
    ap = argparse.ArgumentParser(description="Re-verify an exported RCM compliance log offline.")
    ap.add_argument("export", nargs="?")
    ap.add_argument("--key", help="the log's verifier key (or a file holding it)")
    ap.add_argument("--checkpoint", action="append", default=[])
    ap.add_argument("--witness", action="append", default=[], help="a witness verifier key (or file)")
    ap.add_argument("--proof", action="append", default=[],
                    help="check this receipt (rcmctl log proof) alone instead of an export (repeatable)")
    args = ap.parse_args(argv)

    def read_key(v):
        return open(v, encoding="utf-8").read().strip() if os.path.isfile(v) else v

    if args.proof:
        if args.export or args.checkpoint or not args.key:
            sys.exit("--proof takes the receipt and --key (and --witness), no export or --checkpoint")
        witnesses = [parse_vkey(read_key(w), 0x04) for w in args.witness]
        vkey = parse_vkey(read_key(args.key), 0x01)
        failed = 0
        for path in args.proof:
            entry, summary, reason = check_proof(path, vkey, witnesses)
            if reason:
                failed += 1
                print(f"{path}: FAILED: {reason}")
                continue
            if witnesses:
                summary += f", cosigned by {len(witnesses)} witness(es)"
            print("ok: " + summary)
            print(json.dumps(entry, indent=2, ensure_ascii=False))
        return 1 if failed else 0
    if not args.export:
        ap.error("give the export, or --proof FILE")

    chains, trees = {}, {}
    with open(args.export, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            e = json.loads(line, object_pairs_hook=unique_keys)
            c = chains.setdefault(e["accountId"], {"seq": 0, "hash": "0" * 64, "broken": None})
            leaves = trees.setdefault(e["accountId"], [])
            try:
                leaves.append(leaf_hash(e))
            except (ValueError, KeyError):
                c["broken"] = c["broken"] or e.get("seq", c["seq"] + 1)
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

    checkpoints = list(args.checkpoint)
    if not checkpoints:
        here = os.path.dirname(args.export)
        checkpoints = [p for p in (os.path.join(here, a + ".checkpoint") for a in chains) if os.path.exists(p)]
        if checkpoints and not args.key:
            print(f"not checked without --key: {', '.join(checkpoints)}", file=sys.stderr)
            checkpoints = []
    elif not args.key:
        sys.exit("--checkpoint needs --key, the log's verifier key")
    failed = 0
    results = {}
    if checkpoints:
        _, log_pub = parse_vkey(read_key(args.key), 0x01)
        witnesses = [parse_vkey(read_key(w), 0x04) for w in args.witness]
        for path in checkpoints:
            account, reason = check_checkpoint(path, log_pub, witnesses, trees)
            if reason:
                failed += 1
                print(f"{path}: FAILED: {reason}")
            results.setdefault(account, []).append((path, reason))

    for account, c in chains.items():
        root = base64.b64encode(tree_root(trees[account])).decode()
        if c["broken"] is None:
            print(f"{account}: ok, {c['seq']} entries, head {c['hash']}, tree {len(trees[account])} root {root}")
        else:
            failed += 1
            print(f"{account}: BROKEN at seq {c['broken']}")
        for path, reason in results.get(account, []):
            if reason is None:
                print(f"{account}: checkpoint {path} ok: the export matches or extends it")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
