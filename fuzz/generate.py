"""Structure-aware inputs for the fuzzer: descriptions, description files, conditions,
vmdesc trees and migration streams, made and broken where their structure is.

Every generator takes a ``random.Random`` and nothing else that varies, so an
input is reproduced from its seed.  Byte flips alone rarely get past a stream's
magic, a vmdesc's JSON or a TOML parser; these generators build valid structure
first, then break one thing in it at a time: a section header field, a length,
a JSON node, a TOML key, an operand type.
"""

from __future__ import annotations

import json
import random
import struct
from collections.abc import Callable
from typing import Any

from vmstate import fields as F
from vmstate.description import Description, Subsection
from vmstate.kinds.scalar import SCALAR_TYPES

_SCALARS = sorted(SCALAR_TYPES)
_INTS = [t for t, (code, _) in SCALAR_TYPES.items() if code.lstrip("<") in "bBhHiIqQ"]
_OPS = ["&", "|", "^", "<<", ">>", "+", "-", "*", "//", "%", "==", "!=", "<", "<=", ">", ">=",
        "and", "or"]


def pick(rng: random.Random, items: list[Any]) -> Any:
    return items[rng.randrange(len(items))]


def interesting_int(rng: random.Random) -> int:
    """Numbers that find edges: 0, 1, powers of two and their neighbours, negatives."""
    base = pick(rng, [0, 1, 2, 7, 8, 63, 64, 255, 256, 4095, 4096, 65535, 2**31, 2**32,
                      2**63, 2**64])
    return pick(rng, [base, base - 1, base + 1, -base, rng.randrange(-(2**70), 2**70)])


# -- conditions ---------------------------------------------------------------------


def condition(rng: random.Random, names: list[str], depth: int = 0) -> str:
    """A condition over *names* (and version_id), well-formed or slightly not."""
    if depth > 3 or rng.random() < 0.35:
        atom = pick(rng, [
            *(names or ["x"]), "version_id", str(interesting_int(rng) % 2**64), "true",
            f"present({pick(rng, names or ['x'])})", "0x80", "nope()",
        ])
        return pick(rng, [atom, atom, f"-{atom}", f"~{atom}", f"not {atom}"])
    left = condition(rng, names, depth + 1)
    right = condition(rng, names, depth + 1)
    text = f"({left} {pick(rng, _OPS)} {right})"
    if rng.random() < 0.03:  # a syntax error now and then
        cut = rng.randrange(len(text))
        text = text[:cut] + pick(rng, ["(", ")", "**", "a.b", "", "'"]) + text[cut + 1 :]
    return text


# -- descriptions (Python values) --------------------------------------------------


def description(rng: random.Random, name: str = "dev", depth: int = 0) -> Description:
    """A random description: every kind, versions, exists-tests, subsections."""
    version = rng.randint(1, 4)
    fields: list[F.Field] = []
    stored: list[str] = []
    counts: list[str] = []
    for i in range(rng.randint(0, 10)):
        field_name = f"f{i}"
        since = rng.randint(0, version)
        exists = condition(rng, stored) if stored and rng.random() < 0.2 else None
        kind = _kind(rng, counts, depth)
        if kind is None:
            continue
        try:
            field = F.Field(field_name if kind.stored else "unused", kind, since, exists)
        except Exception:
            continue
        fields.append(field)
        if kind.stored:
            stored.append(field_name)
            if getattr(kind, "is_integer", False):
                counts.append(field_name)
    subs = []
    if depth < 2:
        for k in range(rng.randint(0, 2)):
            sub = description(rng, f"{name}/s{k}", depth + 1)
            needed = condition(rng, stored) if stored and rng.random() < 0.5 else None
            try:
                subs.append(Subsection(sub, needed))
            except Exception:
                continue
    return Description(name, version, rng.randint(0, version), fields, subs)


def _kind(rng: random.Random, counts: list[str], depth: int) -> F.Kind | None:
    choice = rng.randrange(12)
    if choice < 4:
        return F.scalar_kind(pick(rng, _SCALARS))
    if choice == 4:
        return F.Buffer(rng.randint(0, 12))
    if choice == 5:
        return F.Array(F.scalar_kind(pick(rng, _SCALARS)), rng.randint(0, 6))
    if choice == 6:
        return F.Bitmap(rng.randint(0, 200))
    if choice == 7:
        return F.Unused(rng.randint(0, 4))
    if choice == 8 and depth < 3:
        inner = description(rng, f"s{depth}", depth + 1)
        element = F.Struct(inner, rng.randint(inner.minimum_version_id, inner.version_id)
                           if rng.random() < 0.3 else None)
        return pick(rng, [element, F.Array(element, rng.randint(0, 3)), F.QTailQ(element)])
    if choice == 9 and counts:
        element = pick(rng, [F.scalar_kind("uint16"), F.Buffer(3)])
        return F.VArray(element, pick(rng, counts), rng.randint(0, 40),
                        pick(rng, ["uint8", "uint16", "uint32", "int32"]), rng.randint(1, 3))
    if choice == 10 and counts:
        return pick(rng, [F.VBuffer, F.VBufferUint64])(pick(rng, counts), rng.randint(0, 64),
                                                        rng.randint(1, 3))
    if choice == 11:
        return F.Seq(tuple(F.scalar_kind(pick(rng, _SCALARS)) for _ in range(rng.randint(0, 3))))
    return None


def value(rng: random.Random, kind: Any) -> Any:
    """A value for *kind*: usually one that fits, sometimes one that does not."""
    if rng.random() < 0.05:
        return pick(rng, [None, "x", 1.5, b"\x00", [], {}, interesting_int(rng), True])
    info = getattr(kind, "info", "")
    if isinstance(kind, F.Scalar):
        if info in ("float64", "CPU_Double_U"):
            return pick(rng, [0.0, -1.5, float("inf"), float("nan"), 1e300])
        if info == "bool":
            return pick(rng, [True, False, 2])
        bits = 8 * kind.size
        return rng.randrange(0, 2**bits) - (2 ** (bits - 1) if info.split()[0].lstrip("le_")
                                            .startswith("int") else 0)
    if isinstance(kind, F.Buffer):
        return rng.randbytes(kind.size)
    if isinstance(kind, F.VBuffer):
        return rng.randbytes(rng.randint(0, 20))
    if isinstance(kind, F.Bitmap):
        return rng.getrandbits(kind.nbits) if kind.nbits else 0
    if isinstance(kind, F.Struct):
        return state(rng, kind.description)
    if isinstance(kind, F.Array):
        return [value(rng, kind.element) for _ in range(kind.count)]
    if isinstance(kind, F.VArray | F.QTailQ):
        return [value(rng, kind.element) for _ in range(rng.randint(0, 4))]
    if isinstance(kind, F.Seq):
        return [value(rng, k) for k in kind.elements]
    return None


def state(rng: random.Random, desc: Description) -> dict[str, Any]:
    out: dict[str, Any] = {f.name: value(rng, f.kind) for f in desc.fields if f.stored}
    for sub in desc.subsections:
        if rng.random() < 0.6:
            out[sub.name] = state(rng, sub.description)
    counted = [f for f in desc.fields if isinstance(f.kind, F.VArray | F.VBuffer)]
    for field in counted:  # make the count field agree, most of the time
        size_field = getattr(field.kind, "count_field", getattr(field.kind, "size_field", ""))
        got = out.get(field.name)
        if rng.random() < 0.9 and isinstance(got, list | bytes) and size_field in out:
            out[size_field] = len(got) // field.kind.multiply
    return out


# -- description files (TOML text) --------------------------------------------------

_TYPES = [*_SCALARS, "buffer", "vbuffer", "vbuffer_uint64", "bitmap", "unused", "validate",
          "struct", "array", "varray", "qtailq", "seq", "uint17", ""]
_KEYS = ["name", "type", "size", "max_size", "multiply", "info", "nbits", "struct", "version",
         "element", "elements", "count", "count_type", "max_count", "nullable", "since",
         "exists", "bogus"]


def toml_value(rng: random.Random, names: list[str]) -> str:
    kind = rng.randrange(9)
    if kind == 0:
        return str(interesting_int(rng) % 2**63 * pick(rng, [1, -1]))
    if kind == 1:
        return json.dumps(pick(rng, [*names, *_SCALARS, "entry", "x/y", "", "\u00e9"]))
    if kind == 2:
        return pick(rng, ["true", "false"])
    if kind == 3:
        return json.dumps(condition(rng, names))
    if kind == 4:
        return "[" + ", ".join(json.dumps(pick(rng, [*_SCALARS, "entry"]))
                               for _ in range(rng.randint(0, 3))) + "]"
    if kind == 5:
        return f'{{ type = "buffer", size = {rng.randint(-1, 8)} }}'
    if kind == 6:
        return "1.5"
    return str(rng.randint(0, 16))


def description_file(rng: random.Random) -> str:
    """A description file that is mostly right: every kind, references, structs, mistakes."""
    lines = ["[description]", 'name = "dev"', f"version_id = {rng.randint(0, 4)}"]
    if rng.random() < 0.5:
        lines.append(f"minimum_version_id = {rng.randint(0, 5)}")
    names: list[str] = []
    lines.append("fields = [")
    for i in range(rng.randint(0, 12)):
        keys = {"name": json.dumps(f"f{i}"), "type": json.dumps(pick(rng, _TYPES))}
        for key in rng.sample(_KEYS, rng.randint(0, 4)):
            keys[key] = toml_value(rng, names)
        if rng.random() < 0.1:
            keys.pop(pick(rng, list(keys)))
        lines.append("  { " + ", ".join(f"{k} = {v}" for k, v in keys.items()) + " },")
        names.append(f"f{i}")
    lines.append("]")
    for k in range(rng.randint(0, 2)):
        lines += ["", "[[description.subsections]]",
                  f'name = "{pick(rng, ["dev/", "other/", "dev"])}{k}"', "version_id = 1",
                  f"needed = {json.dumps(condition(rng, names))}",
                  f'fields = [ {{ name = "x", type = "{pick(rng, _TYPES)}" }} ]']
    if rng.random() < 0.7:
        lines += ["", "[structs.entry]", "version_id = 2",
                  'fields = [ { name = "addr", type = "uint64" }, '
                  f'{{ name = "d", type = "{pick(rng, _TYPES)}", struct = "entry" }} ]']
    text = "\n".join(lines) + "\n"
    if rng.random() < 0.1:  # and sometimes a byte-level break on top
        data = bytearray(text.encode())
        data[rng.randrange(len(data))] = rng.randrange(256)
        text = data.decode("utf-8", "replace")
    return text


# -- vmdesc trees and streams -------------------------------------------------------

_VMDESC_TYPES = [*_SCALARS, "buffer", "struct", "vstruct", "tmp", "unused_buffer", "nullptr",
                 "pci config", "msix state", "bitmap", "qtailq", "uint64", 7]


def vmdesc_entry(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    """A vmdesc device or struct entry: plausible, with a wrong node now and then."""
    fields = []
    for i in range(rng.randint(0, 6)):
        typ = pick(rng, _VMDESC_TYPES)
        field: dict[str, Any] = {"name": pick(rng, [f"f{i}", "f0", ""]), "type": typ,
                                 "size": pick(rng, [0, 1, 2, 4, 8, rng.randint(0, 40), -1])}
        if typ == "struct" and depth < 4:
            field["struct"] = vmdesc_entry(rng, depth + 1)
        if typ in ("vstruct", "tmp") and depth < 4:
            field.update(vmdesc_entry(rng, depth + 1))
        if rng.random() < 0.2:
            field["array_len"] = pick(rng, [0, 1, 2, 5, 2**31, -1])
        if rng.random() < 0.15:
            field["index"] = pick(rng, [0, 1, 3])
        if rng.random() < 0.05:
            field[pick(rng, ["size", "name", "type"])] = pick(rng, [None, [], {}, "x", True])
        fields.append(field)
    entry: dict[str, Any] = {"vmsd_name": pick(rng, ["dev", "s", ""]), "version": rng.randint(0, 3),
                             "fields": fields}
    if depth < 2 and rng.random() < 0.3:
        entry["subsections"] = [vmdesc_entry(rng, depth + 1) for _ in range(rng.randint(0, 2))]
    return entry


def one_section_stream(rng: random.Random, payload: bytes, vmdesc: Any, name: str = "dev",
                       version: int = 1) -> bytes:
    """QEVM, one FULL section with a footer, EOF and the vmdesc."""
    idstr = name.encode()
    out = bytearray(b"QEVM" + struct.pack(">I", 3))
    out += bytes([0x04]) + struct.pack(">IB", 0, len(idstr)) + idstr
    out += struct.pack(">II", 0, version) + payload + bytes([0x7E]) + struct.pack(">I", 0)
    body = json.dumps(vmdesc).encode()
    out += bytes([0x00, 0x06]) + struct.pack(">I", len(body)) + body
    return bytes(out)


def ram_section(rng: random.Random) -> bytes:
    """A stream whose ram section has random blocks and records (QEMU's framing)."""
    out = bytearray(b"QEVM" + struct.pack(">I", 3))
    out += bytes([0x01]) + struct.pack(">IB", 1, 3) + b"ram" + struct.pack(">II", 0, 4)
    blocks = [(pick(rng, ["pc.ram", "a/b", "..", "", "x\x00y", "/", "blk"]),
               pick(rng, [4096, 8192, 0, 1 << 40, rng.randint(1, 1 << 20)]))
              for _ in range(rng.randint(1, 3))]
    total = sum(size for _, size in blocks) + pick(rng, [0, 0, 0, 1, -1])
    out += struct.pack(">Q", (max(total, 0) & ~0xFFF) | 0x04)
    for block, size in blocks:
        raw = block.encode()
        out += bytes([len(raw) & 0xFF]) + raw + struct.pack(">Q", size)
    out += struct.pack(">Q", 0x10)  # EOS
    out += bytes([0x7E]) + struct.pack(">I", 1)
    out += bytes([0x03]) + struct.pack(">I", 1)
    current = None
    for _ in range(rng.randint(0, 12)):
        block, size = pick(rng, blocks)
        addr = pick(rng, [0, 4096, size, size + 4096, rng.randrange(0, 1 << 48)]) & ~0xFFF
        flags = pick(rng, [0x02, 0x08, 0x22, 0x28, 0x40, 0x100, 0x02 | 0x10])
        if current == block and rng.random() < 0.7:
            flags |= 0x20
        out += struct.pack(">Q", addr | flags)
        if not flags & 0x20:
            raw = block.encode()
            out += bytes([len(raw) & 0xFF]) + raw
            current = block
        out += bytes([rng.randrange(256)]) if flags & 0x02 else rng.randbytes(
            pick(rng, [4096, 4096, 100]))
    out += struct.pack(">Q", 0x10) + bytes([0x7E]) + struct.pack(">I", 1)
    body = b'{"page_size": 4096, "devices": []}'
    out += bytes([0x00, 0x06]) + struct.pack(">I", len(body)) + body
    return bytes(out)


def ram_passes(rng: random.Random) -> tuple[bytes, dict[str, bytes]]:
    """A well-formed ram section as a running guest's migration writes it: passes over
    its blocks, each sending runs of pages (data, or zero pages, their fill byte now and
    then not 0) in ascending order or shuffled, long runs among them (the walker skips
    those in bulk past its first 16 records, 4096 zero pages or 255 pages at a time).
    Returns the stream and what each block holds when QEMU has loaded it: every page
    as its last record left it (a zero record clears a page, ram_handle_zero)."""
    blocks = [(name, pick(rng, [1, 17, 300, 4113, 9000]))
              for name in rng.sample(["pc.ram", "vga.vram", "/rom@etc/acpi/tables"], rng.randint(1, 3))]
    out = bytearray(b"QEVM" + struct.pack(">I", 3))
    out += b"\x01" + struct.pack(">IB", 1, 3) + b"ram" + struct.pack(">II", 0, 4)
    out += struct.pack(">Q", sum(n for _, n in blocks) * 4096 | 0x04)
    for name, pages in blocks:
        out += bytes([len(name)]) + name.encode() + struct.pack(">Q", pages * 4096)
    out += struct.pack(">Q", 0x10) + b"\x7e" + struct.pack(">I", 1)  # EOS, footer
    content = {name: [b""] * pages for name, pages in blocks}
    current, data_pages = None, 0
    for _pass in range(rng.randint(1, 4)):  # one PART section per pass
        out += b"\x02" + struct.pack(">I", 1)
        for _ in range(rng.randint(1, 4)):
            name, pages = pick(rng, blocks)
            start = rng.randrange(pages)
            run = list(range(start, min(pages, start + pick(rng, [1, 5, 16, 17, 300, 4200, 9000]))))
            if rng.random() < 0.2:
                rng.shuffle(run)
            zero = rng.random() < 0.6
            for page in run:
                if zero or data_pages >= 400 or rng.random() < 0.1:
                    fill = 0 if rng.random() < 0.95 else rng.randrange(1, 256)
                    flags, payload = 0x02, bytes([fill])
                    content[name][page] = bytes([fill]) * 4096
                else:
                    data_pages += 1
                    payload = bytes([rng.randrange(256)]) * 4096 if rng.random() < 0.8 else rng.randbytes(4096)
                    flags = 0x08
                    content[name][page] = payload
                out += struct.pack(">Q", page * 4096 | flags | (0x20 if name == current else 0))
                if name != current:
                    out += bytes([len(name)]) + name.encode()
                    current = name
                out += payload
        out += struct.pack(">Q", 0x10) + b"\x7e" + struct.pack(">I", 1)
    out += b"\x03" + struct.pack(">I", 1) + struct.pack(">Q", 0x10) + b"\x7e" + struct.pack(">I", 1)
    body = b'{"page_size": 4096, "devices": []}'
    out += b"\x00\x06" + struct.pack(">I", len(body)) + body
    expected = {name: b"".join(p or bytes(4096) for p in pages) for name, pages in content.items()}
    return bytes(out), expected


def mapped_ram_stream(rng: random.Random) -> tuple[bytes, dict[str, bytes], list[tuple[int, int]]]:
    """A file as QEMU 9.0+ writes with mapped-ram: the configuration names the
    capability; each block of the MEM_SIZE record is followed by its header (version 1,
    page size, bitmap offset, pages offset), and the stream goes on after the block's
    page area.  Returns the file, what each block holds (pages the bitmap marks; the
    others are zero whatever the file has there), and the spans of headers and bitmaps."""
    page = pick(rng, [4096, 4096, 4096, 8192])
    cap, sub = b"mapped-ram", b"configuration/capabilities"
    out = bytearray(b"QEVM" + struct.pack(">I", 3) + b"\x07" + struct.pack(">I", 3) + b"m35")
    out += b"\x05" + bytes([len(sub)]) + sub + struct.pack(">II", 1, 1) + bytes([len(cap)]) + cap
    names = rng.sample(["pc.ram", "/rom@etc/acpi/tables", "pc.bios", "0000:00:02.0/vga.vram"],
                       rng.randint(1, 3))
    blocks = [(name, pick(rng, [1, 2, 3, 8, 63, 64, 65])) for name in names]
    out += b"\x01" + struct.pack(">IB", 2, 3) + b"ram" + struct.pack(">II", 0, 4)
    out += struct.pack(">Q", sum(n for _, n in blocks) * page | 0x04)
    expected, spans = {}, []
    for name, npages in blocks:
        raw = name.encode()
        out += bytes([len(raw)]) + raw + struct.pack(">Q", npages * page)
        header_at = len(out)
        bitmap_at = header_at + 28 + pick(rng, [0, 0, 8, 100])
        bitmap_size = (npages + 63) // 64 * 8
        pages_at = -(-(bitmap_at + bitmap_size) // page) * page + pick(rng, [0, 0, page])
        bits = rng.getrandbits(npages) & rng.getrandbits(npages)
        out += struct.pack(">IQQQ", 1, page, bitmap_at, pages_at)
        out += bytes(bitmap_at - len(out)) + bits.to_bytes(bitmap_size, "little")
        out += bytes(pages_at - len(out))
        spans += [(header_at, header_at + 28), (bitmap_at, bitmap_at + bitmap_size)]
        content = bytearray()
        for n in range(npages):
            marked = bits >> n & 1
            filler = bytes([rng.randrange(1, 256)]) * page if rng.random() < 0.5 else bytes(page)
            out += filler if marked or rng.random() < 0.2 else bytes(page)  # junk where unmarked
            content += filler if marked else bytes(page)
        expected[name] = bytes(content)
    out += struct.pack(">Q", 0x10) + b"\x7e" + struct.pack(">I", 2) + b"\x00"
    body = b'{"page_size": 4096, "devices": []}'
    out += b"\x06" + struct.pack(">I", len(body)) + body
    return bytes(out), expected, spans


def stream_mutation(rng: random.Random, data: bytes, sections: list[tuple[int, int]],
                    vmdesc_at: int | None) -> bytes:
    """One structural change to a real stream: a header field, a boundary cut, a
    section dropped or repeated, a vmdesc node, or a few bytes of a payload."""
    out = bytearray(data)
    sections = [(start, min(end, len(out))) for start, end in sections if start < len(out)]
    op = rng.randrange(8)
    if op == 0 and sections:  # a header field of one section
        start, _ = pick(rng, sections)
        at = min(start + pick(rng, [0, 1, 2, 3, 4, 5, 6]), len(out) - 1)
        out[at] = pick(rng, [0, 1, 2, 3, 4, 5, 6, 7, 8, 0x7E, 0xFF, rng.randrange(256)])
    elif op == 1 and sections:  # cut at or around a section boundary
        start, end = pick(rng, sections)
        del out[pick(rng, [start, end, end + 1, end + 5, start + 3]) :]
    elif op == 2 and len(sections) > 1:  # drop, repeat or swap whole sections
        (a0, a1), (b0, b1) = rng.sample(sections, 2)
        first, second = sorted([(a0, a1), (b0, b1)])
        chunk = bytes(out[second[0] : second[1] + 5])
        if rng.random() < 0.5:
            del out[first[0] : first[1] + 5]
        else:
            out[first[0] : first[0]] = chunk
    elif op == 3 and vmdesc_at is not None:  # a node of the vmdesc tree
        try:
            tree = json.loads(bytes(out[vmdesc_at + 5 :]))
            _mutate_json(rng, tree, 0)
            body = json.dumps(tree).encode()
        except (ValueError, RecursionError):
            body = rng.randbytes(10)
        out[vmdesc_at:] = bytes([0x06]) + struct.pack(">I", len(body)) + body
    elif op == 4 and sections:  # bytes inside one payload
        start, end = pick(rng, sections)
        for _ in range(rng.randint(1, 4)):
            if end > start:
                out[rng.randrange(start, end)] = pick(rng, [0, 1, 0x05, 0x30, 0xFF,
                                                            rng.randrange(256)])
    elif op == 5 and sections:  # a subsection marker where a field was
        start, end = pick(rng, sections)
        if end - start > 16:
            at = rng.randrange(start + 8, end - 4)
            out[at : at + 2] = bytes([0x05, rng.randrange(256)])
    elif op == 6:
        at = rng.randrange(len(out) + 1)
        out[at:at] = rng.randbytes(rng.randint(1, 16))
    elif out:  # an earlier mutation may have cut it all
        out[rng.randrange(len(out))] = rng.randrange(256)
    return bytes(out)


def _mutate_json(rng: random.Random, node: Any, depth: int) -> None:
    if isinstance(node, dict) and node:
        key = pick(rng, list(node))
        if rng.random() < 0.4 or depth > 6:
            node[key] = pick(rng, [None, -1, 0, 2**40, "x", [], {}, True, 1.5,
                                   *([node[key]] * 2)])
        else:
            _mutate_json(rng, node[key], depth + 1)
    elif isinstance(node, list) and node:
        i = rng.randrange(len(node))
        if rng.random() < 0.3:
            node[i:i] = [node[i]] if rng.random() < 0.5 else []
            if rng.random() < 0.5:
                del node[i]
        else:
            _mutate_json(rng, node[i], depth + 1)


Generator = Callable[[random.Random], Any]
