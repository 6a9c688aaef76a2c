"""A tiny, independent Kafka wire encoder/decoder for hand-made (and malformed) requests.

It is written from the protocol description, not from the broker's code, so the two can
disagree. Only what the bad-input tests need is here.
"""

import socket
import struct
import time
import zlib

# -- primitive encoding ------------------------------------------------------------------------


def i8(v):
    return struct.pack(">b", v)


def i16(v):
    return struct.pack(">h", v)


def i32(v):
    return struct.pack(">i", v)


def u32(v):
    return struct.pack(">I", v)


def i64(v):
    return struct.pack(">q", v)


def string(s):
    """STRING / NULLABLE_STRING: int16 length (-1 for null) then UTF-8 bytes."""
    if s is None:
        return i16(-1)
    b = s.encode() if isinstance(s, str) else s
    return i16(len(b)) + b


def bytes_(b):
    """BYTES / NULLABLE_BYTES: int32 length (-1 for null) then the bytes."""
    if b is None:
        return i32(-1)
    return i32(len(b)) + b


def uvarint(v):
    out = bytearray()
    while True:
        byte = v & 0x7F
        v >>= 7
        if v:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def varint(v):
    """Zig-zag signed varint (also used for varlong)."""
    return uvarint((v << 1) ^ (v >> 63))


def compact_string(s):
    if s is None:
        return uvarint(0)
    b = s.encode()
    return uvarint(len(b) + 1) + b


def array(items):
    """ARRAY: int32 count then the already-encoded items."""
    return i32(len(items)) + b"".join(items)


EMPTY_TAGGED_FIELDS = uvarint(0)


def request(api_key, api_version, correlation_id, body, client_id="skein-tests", flexible=False):
    """A whole frame: int32 size, then request header v1 (v2 if flexible), then body."""
    header = i16(api_key) + i16(api_version) + i32(correlation_id) + string(client_id)
    if flexible:
        header += EMPTY_TAGGED_FIELDS
    payload = header + body
    return i32(len(payload)) + payload


# -- decoding --------------------------------------------------------------------------------


class Reader:
    """Bounds-checked reader over one response payload."""

    def __init__(self, data):
        self.data = data
        self.pos = 0

    def take(self, n):
        assert n >= 0, f"negative length {n} at offset {self.pos}"
        assert self.pos + n <= len(self.data), (
            f"response too short: need {n} bytes at offset {self.pos}, "
            f"have {len(self.data) - self.pos}"
        )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def i8(self):
        return struct.unpack(">b", self.take(1))[0]

    def i16(self):
        return struct.unpack(">h", self.take(2))[0]

    def i32(self):
        return struct.unpack(">i", self.take(4))[0]

    def i64(self):
        return struct.unpack(">q", self.take(8))[0]

    def string(self):
        n = self.i16()
        return None if n < 0 else self.take(n).decode()

    def uvarint(self):
        shift = 0
        value = 0
        while True:
            b = self.take(1)[0]
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
            assert shift < 64, "varint too long"

    def compact_string(self):
        n = self.uvarint()
        return None if n == 0 else self.take(n - 1).decode()

    def tagged_fields(self):
        """Skips a tagged-field section; returns {tag: raw bytes}."""
        fields = {}
        for _ in range(self.uvarint()):
            tag = self.uvarint()
            fields[tag] = self.take(self.uvarint())
        return fields

    def remaining(self):
        return len(self.data) - self.pos

    def assert_at_end(self, what):
        assert self.remaining() == 0, f"{self.remaining()} unexpected trailing bytes in {what}"


# -- sockets ---------------------------------------------------------------------------------


def connect(bootstrap, timeout=10.0):
    host, port = bootstrap.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exact(sock, n, deadline):
    buf = bytearray()
    while len(buf) < n:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(n - len(buf))
        except socket.timeout:
            raise AssertionError(f"timed out reading a response ({len(buf)}/{n} bytes)") from None
        if not chunk:
            raise AssertionError(
                f"connection closed while reading a response ({len(buf)}/{n} bytes)"
            )
        buf += chunk
    return bytes(buf)


def recv_frame(sock, timeout=10.0):
    """Reads one size-prefixed response; returns (correlation_id, Reader over the rest)."""
    deadline = time.monotonic() + timeout
    size = struct.unpack(">i", recv_exact(sock, 4, deadline))[0]
    assert 4 <= size <= 64 * 1024 * 1024, f"implausible response size {size}"
    payload = recv_exact(sock, size, deadline)
    r = Reader(payload)
    return r.i32(), r


def roundtrip(bootstrap, frame, timeout=10.0):
    with connect(bootstrap) as sock:
        sock.sendall(frame)
        return recv_frame(sock, timeout)


def read_until_closed(sock, timeout=10.0):
    """Reads until the peer closes; returns what arrived before. Fails if it stays open."""
    deadline = time.monotonic() + timeout
    received = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(
                f"connection still open after {timeout:.0f}s (received {len(received)} bytes)"
            )
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return bytes(received)
        if not chunk:
            return bytes(received)
        received += chunk


def send_ignoring_reset(sock, data):
    """Sends; a broker that already closed the connection is not an error here."""
    try:
        sock.sendall(data)
    except (ConnectionResetError, BrokenPipeError):
        pass


# -- ApiVersions -----------------------------------------------------------------------------

API_PRODUCE = 0
API_FETCH = 1
API_LIST_OFFSETS = 2
API_METADATA = 3
API_API_VERSIONS = 18
API_CREATE_TOPICS = 19
API_DELETE_TOPICS = 20
API_DELETE_RECORDS = 21
API_INIT_PRODUCER_ID = 22
API_DESCRIBE_CONFIGS = 32
API_ALTER_CONFIGS = 33
API_CREATE_PARTITIONS = 37
API_INCREMENTAL_ALTER_CONFIGS = 44
API_DESCRIBE_CLUSTER = 60


def api_versions_request(version, correlation_id):
    if version >= 3:
        body = compact_string("skein-tests") + compact_string("1.0") + EMPTY_TAGGED_FIELDS
        return request(API_API_VERSIONS, version, correlation_id, body, flexible=True)
    return request(API_API_VERSIONS, version, correlation_id, b"")


def parse_api_versions_v0(r):
    """Body of a v0 ApiVersions response: (error_code, {api_key: (min, max)})."""
    error = r.i16()
    count = r.i32()
    assert 0 <= count <= 1000, f"implausible api_keys count {count}"
    keys = {}
    for _ in range(count):
        key, lo, hi = r.i16(), r.i16(), r.i16()
        keys[key] = (lo, hi)
    r.assert_at_end("a v0 ApiVersions response")
    return error, keys


def parse_api_versions_v3(r):
    """Body of a v3 ApiVersions response (header v0): (error_code, {api_key: (min, max)})."""
    error = r.i16()
    n = r.uvarint()
    assert 1 <= n <= 1001, f"implausible compact api_keys length {n}"
    keys = {}
    for _ in range(n - 1):
        key, lo, hi = r.i16(), r.i16(), r.i16()
        r.tagged_fields()
        keys[key] = (lo, hi)
    r.i32()  # throttle_time_ms
    r.tagged_fields()
    r.assert_at_end("a v3 ApiVersions response")
    return error, keys


# -- records ---------------------------------------------------------------------------------


def _crc32c_table():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data):
    """CRC-32C (Castagnoli), the checksum of v2 record batches."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC32C_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283, "CRC-32C self-check failed"


def record_batch(
    values,
    base_timestamp_ms=None,
    corrupt_crc=False,
    producer_id=-1,
    producer_epoch=-1,
    base_sequence=-1,
):
    """An uncompressed magic-2 record batch holding `values` (bytes) with null keys."""
    ts = int(time.time() * 1000) if base_timestamp_ms is None else base_timestamp_ms
    records = b""
    for delta, value in enumerate(values):
        body = (
            i8(0)  # attributes
            + varint(0)  # timestamp delta
            + varint(delta)  # offset delta
            + varint(-1)  # null key
            + varint(len(value))
            + value
            + varint(0)  # no headers
        )
        records += varint(len(body)) + body
    after_crc = (
        i16(0)  # attributes: no compression, CreateTime, not transactional
        + i32(len(values) - 1)  # last offset delta
        + i64(ts)  # base timestamp
        + i64(ts)  # max timestamp
        + i64(producer_id)
        + i16(producer_epoch)
        + i32(base_sequence)
        + i32(len(values))
        + records
    )
    crc = crc32c(after_crc)
    if corrupt_crc:
        crc ^= 0xDEADBEEF
    after_length = i32(0) + i8(2) + u32(crc) + after_crc  # leader epoch, magic, crc
    return i64(0) + i32(len(after_length)) + after_length


def message_set_v1(values):
    """An old-format (magic 1) message set, as Produce v2 carries."""
    out = b""
    ts = int(time.time() * 1000)
    for offset, value in enumerate(values):
        message = i8(1) + i8(0) + i64(ts) + bytes_(None) + bytes_(value)
        message = u32(zlib.crc32(message)) + message
        out += i64(offset) + i32(len(message)) + message
    return out


def init_producer_id_request(correlation_id):
    """InitProducerId v0 for an idempotent (non-transactional) producer."""
    body = string(None) + i32(60000)  # transactional_id, transaction_timeout_ms
    return request(API_INIT_PRODUCER_ID, 0, correlation_id, body)


def parse_init_producer_id_v0(r):
    """(error_code, producer_id, producer_epoch)."""
    r.i32()  # throttle_time_ms
    error, producer_id, epoch = r.i16(), r.i64(), r.i16()
    r.assert_at_end("an InitProducerId v0 response")
    return error, producer_id, epoch


def produce_request(version, correlation_id, topic, partition, records, acks=-1, timeout_ms=10000):
    """Produce v2 or v3 (non-flexible) for one partition."""
    assert version in (2, 3)
    body = b""
    if version >= 3:
        body += string(None)  # transactional_id
    body += i16(acks) + i32(timeout_ms)
    body += array([string(topic) + array([i32(partition) + bytes_(records)])])
    return request(API_PRODUCE, version, correlation_id, body)


def parse_produce_response(r, version):
    """Produce v2/v3 response body: {(topic, partition): (error_code, base_offset)}."""
    assert version in (2, 3)
    out = {}
    for _ in range(r.i32()):
        name = r.string()
        for _ in range(r.i32()):
            index, error, base_offset = r.i32(), r.i16(), r.i64()
            r.i64()  # log_append_time_ms
            out[(name, index)] = (error, base_offset)
    r.i32()  # throttle_time_ms
    r.assert_at_end(f"a v{version} Produce response")
    return out
