"""VMSTATE_VBUFFER_UINT64 (QEMU 2026): a variable buffer sized by a uint64 field.

The description below is QEMU's vmstate_vhost_inflight_region from the patch
that introduced the macro (hw/virtio/vhost.c): the buffer is a subsection whose
size is the parent's ``size`` field.
"""

from __future__ import annotations

import struct

import pytest

from vmstate import fields as F
from vmstate.description import Description, Subsection
from vmstate.description_file import check_description_text, load_description_text
from vmstate.errors import EncodeError, LimitError

INFLIGHT = Description(
    "vhost-inflight-region", 1, 0,
    [F.uint64("size"), F.uint16("queue_size")],
    [Subsection(Description("vhost-inflight-region/buffer", 1, 0,
                            [F.vbuffer_uint64("addr", "size", 1 << 20)]))],
)
TOML = """
[description]
name = "vhost-inflight-region"
version_id = 1
fields = [
  { name = "size", type = "uint64" },
  { name = "queue_size", type = "uint16" },
]

[[description.subsections]]
name = "vhost-inflight-region/buffer"
version_id = 1
fields = [
  { name = "addr", type = "vbuffer_uint64", size = "size", max_size = 1048576 },
]
"""


def test_the_wire_is_the_size_then_the_bytes_in_a_subsection() -> None:
    state = {"size": 5, "queue_size": 128,
             "vhost-inflight-region/buffer": {"addr": b"hello"}}
    data = INFLIGHT.save(state)
    name = b"vhost-inflight-region/buffer"
    assert data == (struct.pack(">QH", 5, 128) + bytes([5, len(name)]) + name
                    + struct.pack(">I", 1) + b"hello")
    assert INFLIGHT.load(data) == state


def test_a_64_bit_size_from_the_input_is_bounded() -> None:
    data = bytearray(INFLIGHT.save({"size": 5, "queue_size": 1,
                                    "vhost-inflight-region/buffer": {"addr": b"hello"}}))
    data[:8] = struct.pack(">Q", 1 << 40)
    with pytest.raises(LimitError) as e:
        INFLIGHT.load(bytes(data))
    assert e.value.path == ("vhost-inflight-region", "vhost-inflight-region/buffer", "addr")
    assert e.value.found == str(1 << 40)
    with pytest.raises(EncodeError, match="expected 5 bytes, got 4"):
        INFLIGHT.save({"size": 5, "queue_size": 1,
                       "vhost-inflight-region/buffer": {"addr": b"hell"}})


def test_the_description_file_form_reads_back_equal_and_lint_checks_the_size_type() -> None:
    assert load_description_text(TOML) == INFLIGHT
    assert check_description_text(TOML) == []
    narrow = TOML.replace('type = "uint64"', 'type = "uint32"')
    assert [(p.code, p.message) for p in check_description_text(narrow)] == [
        ("count-type", "'size' is a uint32 field but size_type is uint64")]
