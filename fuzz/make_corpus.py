#!/usr/bin/env python3
"""Regenerates the seed corpus in fuzz/corpus/{fernet,json,replication} (deterministic; committed).

Fernet inputs start with a mode byte (see Sources/FuzzFernet/main.swift): 0 = token text,
1 = token bytes to be signed by the harness, 2 = IV + plaintext for a round trip. Tokens are
made with Python's `cryptography` (the reference implementation) and the harness's fixed key.
"""

import base64
import hashlib
import hmac
import json
import os
from pathlib import Path

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

HERE = Path(__file__).resolve().parent
KEY = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4="
raw = base64.urlsafe_b64decode(KEY)
SIGN, ENC = raw[:16], raw[16:]


def token_bytes(plain: bytes, iv: bytes, ts: int) -> bytes:
    p = padding.PKCS7(128).padder()
    padded = p.update(plain) + p.finalize()
    e = Cipher(algorithms.AES(ENC), modes.CBC(iv)).encryptor()
    body = b"\x80" + ts.to_bytes(8, "big") + iv + e.update(padded) + e.finalize()
    return body + hmac.new(SIGN, body, hashlib.sha256).digest()


def write(d: Path, name: str, data: bytes):
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def fernet():
    d = HERE / "corpus" / "fernet"
    iv = bytes(range(16))
    plains = [b'{"host": "db", "port": 5432}', b"", b"x" * 15, b"y" * 16, b'"\\u00e9"', b"null", "ünïcode".encode()]
    for i, p in enumerate(plains):
        t = token_bytes(p, iv, 1_700_000_000 + i)
        tok = base64.urlsafe_b64encode(t)
        write(d, f"valid-{i}", b"\x00" + tok)
        write(d, f"valid-unpadded-{i}", b"\x00" + tok.rstrip(b"="))
        write(d, f"signed-body-{i}", b"\x01" + t[:-32])
        write(d, f"roundtrip-{i}", b"\x02" + iv + p)
    t = token_bytes(b"edge", iv, 0)
    write(d, "valid-ts-zero", b"\x00" + base64.urlsafe_b64encode(t))
    t = token_bytes(b"edge", iv, 2**63 - 1)
    write(d, "signed-ts-max", b"\x01" + t[:-32])
    write(d, "signed-ts-near-max", b"\x01" + token_bytes(b"edge", iv, 2**63 - 30)[:-32])
    write(d, "signed-ts-top-bit", b"\x01" + token_bytes(b"edge", iv, 2**64 - 1)[:-32])
    # once crashed Fernet.decrypt with a ttl (stamp + ttl overflowed); the last byte sets the ttl
    near_max = token_bytes(b"edge", iv, 2**63 - 30)[:-32]
    write(d, "regression-ttl-overflow", b"\x01" + near_max[:-1] + b"\x10")
    # bad padding under a valid MAC: last block decrypts to garbage
    body = b"\x80" + (5).to_bytes(8, "big") + iv + bytes(32)
    write(d, "signed-bad-padding", b"\x01" + body)
    write(d, "empty", b"\x00")
    write(d, "short", b"\x00" + base64.urlsafe_b64encode(b"\x80" + bytes(20)))
    write(d, "wrong-version", b"\x00" + base64.urlsafe_b64encode(b"\x81" + token_bytes(b"v", iv, 1)[1:]))
    write(d, "not-base64", b"\x00gAAAAA!!!!====")
    write(d, "padding-in-middle", b"\x00gAAA=AAAA")
    write(d, "odd-length", b"\x00" + base64.urlsafe_b64encode(token_bytes(b"v", iv, 1) + b"\x00"))
    write(d, "standard-alphabet", b"\x00" + base64.b64encode(token_bytes(b"\xfb\xff" * 20, iv, 1)))
    write(d, "non-ascii", b"\x00" + "gAAAAÄÖÜ".encode())


def js():
    d = HERE / "corpus" / "json"
    docs = {
        "object": b'{"key": "database", "value": {"host": "db.internal", "password": "s3cret"}, "category": "db"}',
        "array": b'[1, -2.5e10, true, false, null, "x", [], {}]',
        "numbers": b'[0, -0, 0.0, 1e999999, 1E+308, -1e-400, 123456789012345678901234567890, 5e-324]',
        "long-number": b"9" * 999,
        "too-long-number": b"9" * 1001,
        "escapes": b'"\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u0000 \\u00e9 \\ud83d\\ude00"',
        "lone-surrogate": b'"\\ud800"',
        "bad-escape": b'"\\x41"',
        "utf8": '{"ключ": "значение", "emoji": "😀", "rtl": "\u202e"}'.encode(),
        "invalid-utf8": b'"\xc0\xaf \xed\xa0\x80 \xf4\x90\x80\x80 \xff"',
        "control-char": b'"a\x01b"',
        "duplicate-keys": b'{"a": 1, "b": 2, "a": 3}',
        "depth-64": b"[" * 64 + b"]" * 64,
        "depth-65": b"[" * 65 + b"]" * 65,
        "nested-objects": b'{"a":' * 40 + b"1" + b"}" * 40,
        "whitespace": b" \t\r\n {\n \"a\" : [ 1 , 2 ] \n} \n",
        "trailing": b'{"a": 1} x',
        "bom": b'\xef\xbb\xbf{"a": 1}',
        "empty": b"",
        "literals": b"[true,false,null,tru,nul]",
        "del-char": b'"\x7f"',
        "nan": b"[NaN, Infinity, -Infinity]",
    }
    for name, data in docs.items():
        write(d, name, data)


def replication():
    """Replication batches as peers send them: valid ones (stamped in 2025, so they stay
    valid whenever the fuzzer runs), forged ones, and conflicting twins."""
    d = HERE / "corpus" / "replication"
    t = 1_750_000_000
    iv = bytes(range(16))
    ciphertext = base64.urlsafe_b64encode(token_bytes(b'"v"', iv, t)).decode()

    def rev(key="k", hlc=(t * 1000) << 16, origin="127.0.0.1:2", deleted=False, ct=ciphertext, **extra):
        r = {"environment": "default", "key": key, "category": None, "ciphertext": "" if deleted else ct, "hlc": hlc,
             "origin": origin, "deleted": deleted, "created_at": t * 1_000_000, "updated_at": t * 1_000_000, "actor": None}
        r.update(extra)
        return r

    batches = {
        "valid": [rev()],
        "valid-two-keys": [rev("a"), rev("b", category="ops", actor="uk:0123456789ab")],
        "tombstone": [rev(), rev(hlc=((t * 1000) << 16) + 1, deleted=True)],
        "twins": [rev(), rev(ct=base64.urlsafe_b64encode(token_bytes(b'"w"', iv, t)).decode())],
        "int64-max": [rev(hlc=2**63 - 1)],
        "negative": [rev(hlc=-1)],
        "garbage-ciphertext": [rev(ct="garbage")],
        "long-category": [rev(category="c" * 5000)],
        "tenant": [rev(tenant="acme")],
    }
    for name, revisions in batches.items():
        write(d, name, json.dumps({"origin": "127.0.0.1:2", "revisions": revisions}).encode())
    write(d, "not-a-batch", b'{"origin": 5, "revisions": {}}')


if __name__ == "__main__":
    fernet()
    js()
    replication()
    print("corpus written:", sum(1 for _ in (HERE / "corpus").rglob("*") if _.is_file()), "files")
