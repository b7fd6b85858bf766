"""A seeded generator of hostile HTTP requests, sent over raw sockets.

`make_request(rng)` returns (description, bytes, half_close). Most requests are whole
requests built from hostile parts (methods, paths with percent-encoding tricks, query
strings, headers, bodies); some are byte-level mutations of a valid request; some are two
requests pipelined on one connection. `send(port, data)` returns every response status the
server sent before closing (an empty list when it closed without answering).
"""

from __future__ import annotations

import json
import random
import socket
import time

from harness import USER_KEY

METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT", "get", "PoSt",
           "PROPFIND", "BREW", "G\x00ET", "", "X" * 300]

ROUTES = ["/", "/health", "/ready", "/metrics", "/configs", "/configs/{k}", "/configs/{k}/", "/configs/{k}/history",
          "/cluster/status", "/cluster/health", "/cluster/salt", "/cluster/replicate", "/cluster/digest",
          "/cluster/buckets", "/cluster/fetch", "/cluster/revision", "/cluster/entries", "/nope", "*", "",
          "http://127.0.0.1/configs", "//configs", "/configs//{k}", "/./configs/{k}", "/configs/../configs/{k}"]

KEY_PARTS = ["a", "key", "fz-1", "fz-2", "fz-3", "%00", "%2F", "%2f", "%C0%AF", "%c0%ae", "%zz", "%", "%4", "%E2%82",
             "%FF", "%FE%FF", "%ED%A0%80", "%F4%90%80%80", "..", ".", "%2e%2e", "~", "%20", "+", "%0d%0a", "%09",
             "é", "\u202e", "😀", "%F0%9F%98%80", "a" * 255, "b" * 256, "c" * 5000, ";", "'", '"', "<", "{", "\\",
             "%5C", "$(id)", "%25", "%2525", "null", "NaN"]

QUERY_PARTS = ["environment=prod", "environment=", "environment=%00", "environment=" + "e" * 101, "environment=%zz",
               "category=db", "category=" + "c" * 200, "limit=0", "limit=-1", "limit=10001", "limit=abc",
               "limit=99999999999999999999999", "limit=1", "offset=-5", "offset=1e3", "after=zz", "after=-1",
               "after=999999999999999999999", "environment=a&environment=b", "=", "&&&", "a=%", "%%%", "x" * 3000,
               "environment=%C0%AF", "category=%F0%9F%98%80"]

USER_KEYS = [USER_KEY] * 6 + ["wrong-key-0001", "short", "", " " * 8, "\t" * 9, "k" * 10000, "ключ-юзера-1",
                              "\x00" * 8, "\xff\xfe" * 5, "reliability-user-key-0001 ", "valid-but-other-01"]

CONTENT_TYPES = ["application/json", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                 "application/json; charset=utf-16", "", "\x00", "a" * 500]


def _json_value(rng: random.Random, depth: int = 0):
    r = rng.random()
    if depth > 4 or r < 0.35:
        return rng.choice([None, True, False, 0, -1, 1.5, -0.0, 2**63, -(2**63) - 1, 1e308, 5e-324, "",
                           "x" * rng.randrange(0, 50), "ü€😀", "\u0000", "\ud7ff", "\\", "\"", "\n\t"])
    if r < 0.65:
        return [_json_value(rng, depth + 1) for _ in range(rng.randrange(0, 5))]
    return {rng.choice(["a", "b", "", "ключ", "\u0000", "k" * 50]): _json_value(rng, depth + 1)
            for _ in range(rng.randrange(0, 5))}


def _body(rng: random.Random, plausible: float = 0.0) -> bytes:
    r = 0 if rng.random() < plausible else rng.randrange(24)
    key = rng.choice(["fz-1", "fz-2", "fz-3", "fz-" + str(rng.randrange(100000)), "fz-" + str(rng.randrange(100000)),
                      "", "a/b", "\u0000", "k" * 256, "k" * 255, "é", "e\u0301"])
    if r <= 5:  # a plausible body, so that requests reach the store
        body = {"key": key, "value": _json_value(rng)}
        if rng.random() < 0.3:
            body["category"] = rng.choice(["db", "", "c" * 101, None, 5])
        if rng.random() < 0.3:
            body["environment"] = rng.choice(["prod", "", "e" * 101, None, ["x"]])
        return json.dumps(body).encode()
    if r == 6:  # invalid UTF-8
        return b'{"key": "fz-u", "value": "' + bytes(rng.choice([[0xC0, 0xAF], [0xFF], [0xED, 0xA0, 0x80], [0xF8, 0x88, 0x80, 0x80, 0x80], [0xE2, 0x82]])) + b'"}'
    if r == 7:  # deep nesting, up to 100k levels
        d = rng.choice([63, 64, 65, 1000, 100_000])
        o = rng.choice(["[", '{"a":'])
        c = "]" if o == "[" else "}"
        return ('{"key": "fz-deep", "value": ' + o * d + "1" + c * d + "}").encode()
    if r == 8:  # huge numbers
        n = rng.choice(["1e999999", "-1e999999", "1e-999999", "1" + "0" * 5000, "9" * 999, "9" * 1001, "1." + "1" * 2000,
                        "1E+308", "1e309", "-0", "0.0e0", "123456789012345678901234567890"])
        return ('{"key": "fz-num", "value": ' + n + "}").encode()
    if r == 9:  # NUL bytes
        return b'{"key": "fz-nul", "value": "a\x00b"}' if rng.random() < 0.5 else b'{"key": "fz-\x00", "value": 1}\x00'
    if r == 10:  # long strings
        return json.dumps({"key": "fz-long", "value": "x" * rng.choice([1000, 100_000, 1_000_000])}).encode()
    if r == 11:
        return b""
    if r == 12:
        return bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 300)))
    if r == 13:
        return rng.choice([b"null", b"[]", b"\"str\"", b"1", b"{}", b'{"key": 1, "value": 2}', b'{"value": 1}',
                           b'{"key": "fz-1"}', b'{"key": "fz-1", "value": 1, "key": "fz-2"}'])
    if r == 14:
        return b'\xef\xbb\xbf{"key": "fz-bom", "value": 1}'
    if r == 15:
        return b'{"key": "fz-sur", "value": "\\ud800"}'
    if r == 16:
        return b'{"key": "fz-esc", "value": "\\x41 \\u00zz"}'
    if r == 17:
        return b'{"key": "fz-trail", "value": 1} {"x": 2}'
    if r == 18:
        return ("[" + ",".join("0" for _ in range(rng.choice([10, 100_000]))) + "]").encode()
    if r == 19:
        return json.dumps({"key": "fz-" + "\u00e9", "value": {"\ud83d\ude00": "😀"}}).encode()
    if r == 20:
        return b'{"key": "fz-nan", "value": NaN}'
    if r == 21:
        return b'{"key": "fz-inf", "value": Infinity}'
    if r == 22:
        return b"{" * 50_000
    return json.dumps({"value": _json_value(rng)}).encode()


def _path(rng: random.Random) -> str:
    route = rng.choice(ROUTES)
    if "{k}" in route:
        k = "".join(rng.choice(KEY_PARTS) for _ in range(rng.randrange(1, 4)))
        route = route.replace("{k}", k)
    if rng.random() < 0.4:
        route += "?" + "&".join(rng.choice(QUERY_PARTS) for _ in range(rng.randrange(1, 4)))
    elif rng.random() < 0.05:
        route += rng.choice(["?", "#frag", "?#", "%"])
    return route


def _headers(rng: random.Random, body: bytes) -> list[tuple[bytes, bytes]]:
    h: list[tuple[bytes, bytes]] = []
    if rng.random() < 0.95:
        h.append((b"Host", b"127.0.0.1"))
    if rng.random() < 0.9:
        uk = rng.choice(USER_KEYS)
        h.append((b"X-User-Key", uk.encode("utf-8", "surrogateescape") if uk != "\xff\xfe" * 5 else b"\xff\xfe" * 5))
    if rng.random() < 0.3:
        h.append((b"X-API-Key", rng.choice([b"", b"x", b"a" * 1000])))
    if rng.random() < 0.6:
        h.append((b"Content-Type", rng.choice(CONTENT_TYPES).encode("latin-1")))
    framing = rng.randrange(20)
    if framing < 13:
        h.append((b"Content-Length", str(len(body)).encode()))
    elif framing == 13:
        h.append((b"Content-Length", rng.choice([b"-1", b"abc", b"99999999999999999999", b" 5", b"+5", b"0x10", b"",
                                                  b"1, 2", b"18446744073709551616", str(len(body) + 10).encode()])))
    elif framing == 14:
        h.append((b"Content-Length", str(len(body)).encode()))
        h.append((b"Content-Length", str(len(body) + 1).encode()))
    elif framing == 15:
        h.append((b"Transfer-Encoding", rng.choice([b"chunked", b"gzip", b"chunked, identity", b"identity", b"xchunked",
                                                    b"chunked\x00", b" chunked"])))
        h.append((b"Content-Length", str(len(body)).encode()))
    elif framing == 16:
        h.append((b"Transfer-Encoding", b"chunked"))
    # else: no framing header at all
    extra = rng.randrange(12)
    if extra == 0:
        h.append((b"X-Pad", b"p" * rng.choice([1000, 30_000, 70_000])))
    elif extra == 1:
        h.append((b"X-Nul", b"a\x00b"))
    elif extra == 2:
        h.append((b"Bad Header", b"x"))
    elif extra == 3:
        h.append((b"X-Fold", b"a\r\n folded"))
    elif extra == 4:
        h.append((b"Expect", b"100-continue"))
    elif extra == 5:
        h.append((b"Connection", rng.choice([b"close", b"keep-alive", b"upgrade", b"Upgrade, HTTP2-Settings"])))
        if rng.random() < 0.5:
            h.append((b"Upgrade", b"h2c"))
    elif extra == 6:
        h.extend((b"X-Many-%d" % i, b"v") for i in range(rng.choice([100, 1000])))
    elif extra == 7:
        h.append((b"X-Utf8", "ключ😀".encode()))
    elif extra == 8:
        h.append((b"", b"empty-name"))
    elif extra == 9:
        h.append((b"X-User-Key", USER_KEY.encode()))  # duplicated
    return h


def _chunked(rng: random.Random, body: bytes) -> bytes:
    out = b""
    i = 0
    while i < len(body):
        n = rng.randrange(1, 4096)
        out += b"%x\r\n" % len(body[i:i + n]) + body[i:i + n] + b"\r\n"
        i += n
    r = rng.random()
    if r < 0.1:
        return out + b"zz\r\n"
    if r < 0.2:
        return out + b"ffffffffffffffffff\r\n"
    if r < 0.3:
        return out  # no terminating chunk
    return out + b"0\r\n\r\n"


CLEAN_METHODS = ["GET", "GET", "POST", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
CLEAN_ROUTES = ["/configs", "/configs/{k}", "/configs/{k}", "/configs/{k}", "/configs/{k}/history", "/", "/health",
                "/metrics", "/cluster/status", "/cluster/salt", "/cluster/replicate", "/cluster/fetch"]
# request-target characters llhttp accepts; the rest are the HTTP parser's business (tested by the wild requests)
_TARGET_OK = set(range(0x21, 0x7F)) - set(b'"<>\\^`{|}')


def _clean_path(rng: random.Random, method: str) -> str:
    if rng.random() < 0.8 and method in ("POST", "GET", "PUT", "DELETE"):
        route = "/configs" if method == "POST" or (method == "GET" and rng.random() < 0.2) else "/configs/{k}"
    else:
        route = rng.choice(CLEAN_ROUTES)
    if "{k}" in route:
        parts = [p for p in KEY_PARTS if all(ord(c) in _TARGET_OK for c in p)]
        key = "".join(rng.choice(parts) for _ in range(rng.randrange(1, 4)))
        route = route.replace("{k}", rng.choice([key, key, "fz-1", "fz-2", "fz-3"]))
    if rng.random() < 0.4:
        route += "?" + "&".join(rng.choice(QUERY_PARTS) for _ in range(rng.randrange(1, 4)))
    return route


def whole_request(rng: random.Random) -> tuple[str, bytes]:
    """Two kinds: `clean` requests are valid HTTP/1.1 (method, target, headers, framing) with
    hostile content (keys, queries, bodies, user keys); `wild` ones break HTTP itself too."""
    clean = rng.random() < 0.65
    if clean:
        method = rng.choice(CLEAN_METHODS)
        path = _clean_path(rng, method)
        body = _body(rng, 0.5) if method in ("POST", "PUT", "PATCH") else b""
        uk = rng.choice([USER_KEY] * 8 + ["wrong-key-0001", "short", "valid-but-other-01", "k" * 10000,
                                          "ключ-юзера-1", "reliability-user-key-0001 "])
        headers = [(b"Host", b"127.0.0.1"), (b"X-User-Key", uk.encode())]
        if body or method in ("POST", "PUT"):
            headers.append((b"Content-Type", b"application/json"))
        if rng.random() < 0.15 and body:
            headers.append((b"Transfer-Encoding", b"chunked"))
        else:
            headers.append((b"Content-Length", str(len(body)).encode()))
        if rng.random() < 0.1:
            headers.append((b"X-Pad", b"p" * rng.choice([1000, 30_000])))
        version = "HTTP/1.1"
    else:
        method = rng.choice(METHODS)
        path = _path(rng)
        body = _body(rng) if method.upper() in ("POST", "PUT", "PATCH") or rng.random() < 0.1 else b""
        headers = _headers(rng, body)
        version = rng.choice(["HTTP/1.1"] * 10 + ["HTTP/1.0", "HTTP/2.0", "HTTP/1.2", "HTTP/0.9", "HTTP/1.1 ", "http/1.1", ""])
    chunked = any(k == b"Transfer-Encoding" and v == b"chunked" for k, v in headers) and \
        not any(k == b"Content-Length" for k, _ in headers)
    head = f"{method} {path} {version}".encode("utf-8", "surrogateescape") + b"\r\n"
    head += b"".join(k + b": " + v + b"\r\n" for k, v in headers)
    data = head + b"\r\n" + (_chunked(rng, body) if chunked else body)
    desc = (f"{'clean' if clean else 'wild'} {method[:20]} {path[:120]!r} {version} "
            f"headers={[k.decode('latin-1') for k, _ in headers][:8]} body={body[:80]!r}{'...' if len(body) > 80 else ''}")
    return desc, data


def _mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randrange(1, 8)):
        op = rng.randrange(5)
        if not b:
            break
        i = rng.randrange(len(b))
        if op == 0:
            b[i] = rng.getrandbits(8)
        elif op == 1:
            del b[i:i + rng.randrange(1, 20)]
        elif op == 2:
            b[i:i] = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 20)))
        elif op == 3:
            b[i:i] = rng.choice([b"\r\n", b"\x00", b"\r\n\r\n", b":", b" ", b"%", b"\xff", b"\n"])
        else:
            j = rng.randrange(len(b))
            b[i:i] = b[j:j + rng.randrange(1, 50)]
    return bytes(b)


def make_request(rng: random.Random) -> tuple[str, bytes, bool]:
    r = rng.random()
    if r < 0.70:
        desc, data = whole_request(rng)
    elif r < 0.90:
        desc, data = whole_request(rng)
        data = _mutate(rng, data)
        desc = "mutated " + desc
    else:
        d1, a = whole_request(rng)
        d2, b = whole_request(rng)
        desc, data = f"pipelined [{d1}] + [{d2}]", a + b
    # Half-close (EOF after the request) so that a truncated request is answered or closed at
    # once; a few requests keep the connection open and rely on the node's idle timeout.
    return desc, data, rng.random() < 0.95


def _parse_all(buf: bytes) -> list[tuple[int, dict[str, str]]]:
    """Status and headers of every response in `buf` (sequential, Content-Length framed)."""
    out = []
    while buf.startswith(b"HTTP/"):
        head, sep, rest = buf.partition(b"\r\n\r\n")
        if not sep:
            lines = head.decode("latin-1").split("\r\n")
            try:
                out.append((int(lines[0].split(" ")[1]), {}))
            except (IndexError, ValueError):
                pass
            break
        lines = head.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split(" ")[1])
        except (IndexError, ValueError):
            break
        headers = {}
        for line in lines[1:]:
            n, _, v = line.partition(":")
            headers[n.strip().lower()] = v.strip()
        out.append((status, headers))
        if headers.get("transfer-encoding", "").lower() == "chunked":
            end = rest.find(b"\r\n0\r\n\r\n")
            buf = rest[end + 7:] if end >= 0 else b""
            if rest.startswith(b"0\r\n\r\n"):
                buf = rest[5:]
        else:
            buf = rest[int(headers.get("content-length", "0") or 0):]
    return out


def _complete(buf: bytes) -> bool:
    head, sep, rest = buf.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.decode("latin-1").split("\r\n")[1:]:
        n, _, v = line.partition(":")
        if n.strip().lower() == "content-length":
            try:
                return len(rest) >= int(v.strip())
            except ValueError:
                return False
        if n.strip().lower() == "transfer-encoding":
            return rest.endswith(b"0\r\n\r\n")
    return True


def send(port: int, data: bytes, half_close: bool, timeout: float) -> tuple[list[tuple[int, dict]], str | None, float]:
    """(responses, error, seconds). error is 'hang' when the server neither answered nor
    closed within `timeout`."""
    t0 = time.monotonic()
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    buf = b""
    err = None
    try:
        try:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        deadline = t0 + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                err = "hang"
                break
            s.settimeout(remaining)
            try:
                chunk = s.recv(1 << 16)
            except socket.timeout:
                err = "hang"
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            buf += chunk
            if not half_close and _complete(buf):
                break  # a keep-alive connection: one whole answer is enough
    finally:
        s.close()
    return _parse_all(buf), err, time.monotonic() - t0
