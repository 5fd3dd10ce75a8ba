"""``vmstate analyze FILE``: decode every device section of a QEMU migration stream
(bare, or in a libvirt save image, raw or compressed)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from vmstate import analyze, pci_vfio, qemu_vfio, registry, stream, vfio_section
from vmstate.errors import UsageError
from vmstate.inputs import StreamInput, open_stream
from vmstate.sources import Decoder, load_decoder


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "analyze",
        help="decode a QEMU migration stream",
        description="Decode every device section of a QEMU migration stream using its vmdesc "
        "(or description files given with --descriptions). The stream may be in a libvirt save "
        "image (virsh save, managedsave), raw or compressed.",
    )
    p.add_argument(
        "file",
        help="migration stream (e.g. written by QMP migrate exec:cat > FILE), libvirt save "
        "image, or - for standard input",
    )
    p.add_argument(
        "--format",
        choices=("summary", "json", "qemu"),
        default="summary",
        help="summary: one line per section (default); json: decoded state; "
        "qemu: what QEMU's scripts/analyze-migration.py -d state prints",
    )
    p.add_argument(
        "--dump",
        choices=("state", "desc"),
        default="state",
        help="desc: print the stream's vmdesc JSON",
    )
    p.add_argument(
        "--descriptions",
        metavar="DIR|FILE",
        help="decode with these descriptions instead of the vmdesc: description files, a "
        "vmdesc, or the source QEMU's -dump-vmstate (fitted to each section's bytes)",
    )
    p.add_argument(
        "--device-data",
        metavar="FORMAT",
        help="decode the device data of VFIO devices with this description "
        "(e.g. mtty-migration-data); the stream does not say which format it is",
    )
    p.add_argument(
        "--verify-roundtrip",
        action="store_true",
        help="re-encode every device section from its decoded state; exit 0 only if all are byte-identical",
    )
    p.add_argument(
        "--extract-ram",
        metavar="DIR",
        help="write guest RAM into DIR, one sparse file per RAM block (DIR must not exist)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with open_stream(args.file) as opened:
        buf = opened.data
        if args.dump == "desc":
            at = stream.find_vmdesc(buf)
            if at is None:
                raise UsageError(
                    f"{args.file} has no vmdesc (QEMU writes one unless the stream was made without it)"
                )
            print(json.dumps(stream.parse_vmdesc(buf, at), indent=4))
            return 0
        decoder = load_decoder(args.descriptions) if args.descriptions else Decoder()
        data_format = registry.get(args.device_data) if args.device_data else None
        extractor = analyze.RamExtractor(args.extract_ram) if args.extract_ram else None
        try:
            parsed = stream.parse(
                buf,
                decoder.resolver,
                page_sink=extractor,
                raw=vfio_section.raw_sections,
                fitter=decoder.layouts,
            )
        except BaseException:
            if extractor is not None:
                extractor.abandon()
            raise
        if extractor is not None:
            for path in extractor.finish(parsed.ram_blocks):
                print(f"{path}: {path.stat().st_size} bytes")
            return 0
        vfio = qemu_vfio.gather(parsed, buf, data_format)
        if args.verify_roundtrip:
            checked, mismatches = analyze.verify_roundtrip(parsed, buf)
            vfio_checked, vfio_mismatches = qemu_vfio.verify(vfio, buf)
            checked, mismatches = checked + vfio_checked, mismatches + vfio_mismatches
            for m in mismatches:
                print(
                    f"{m.section.idstr} (section {m.section.section_id}): re-encoding differs at offset "
                    f"{m.offset:#x}: stream {m.expected.hex()} re-encoded {m.found.hex()}",
                    file=sys.stderr,
                )
            print(
                f"verified {checked} device sections: {checked - len(mismatches)} byte-identical, {len(mismatches)} differ"
            )
            return 1 if mismatches else 0
        if args.format == "qemu":
            _print_sections(analyze.qemu_state(parsed))
        elif args.format == "json":
            out = {
                f"{s.idstr} ({s.section_id})": {
                    "instance_id": s.instance_id,
                    "version_id": s.version_id,
                    "state": s.description.to_json(s.state),
                }
                for s in parsed.device_sections()
                if s.description is not None and s.state is not None
            }
            out.update({f"{d.idstr} (vfio)": _vfio_json(d) for d in vfio})
            print(json.dumps(out, indent=2))
        else:
            _summary(opened, parsed, vfio)
            if decoder.layouts is not None:
                fitted = decoder.layouts.fitted.values()
                read = sum(f.described for f in fitted)
                print(
                    f"  from the dump: {read} sections read field by field, "
                    f"{len(fitted) - read} as opaque bytes (no device class, or several readings fit)"
                )
    return 0


def _vfio_json(device: qemu_vfio.VfioSections) -> dict[str, Any]:
    """A VFIO device's sections: its config state and device data, decoded."""
    out: dict[str, Any] = {
        "sections": [s.section_id for s in device.sections],
        "layout": device.layout(),
    }
    if device.config is not None:
        qemu = registry.get(pci_vfio.QEMU_DESCRIPTION_NAME)
        out["config"] = {"description": qemu.name, "state": qemu.to_json(device.config)}
    data: dict[str, Any] = {"size": device.data_size, "chunks": len(device.chunks)}
    if device.data is not None and device.data_format is not None:
        data["format"] = device.data_format.name
        data["state"] = device.data_format.to_json(device.data)
    out["device_data"] = data
    return out


def _print_sections(sections: dict[str, Any]) -> None:
    """One section per line: readable, and fast (json's C encoder has no indent)."""
    lines = [f"    {json.dumps(key)}: {json.dumps(value)}" for key, value in sections.items()]
    sys.stdout.write("{\n" + ",\n".join(lines) + "\n}\n")


def _summary(
    opened: StreamInput, parsed: stream.Stream, vfio: tuple[qemu_vfio.VfioSections, ...]
) -> None:
    if opened.save_image is not None:
        image = opened.save_image
        print(f"{image.summary()}; the stream starts at offset {image.stream_offset:#x}")
    print(
        f"QEMU migration stream v{parsed.version}, {parsed.size} bytes, machine {parsed.machine or '?'}"
    )
    if parsed.capabilities:
        print(f"  capabilities: {', '.join(parsed.capabilities)}")
    if parsed.commands:
        print(f"  commands: {', '.join(parsed.command_names())}")
    ram = sum(b.length for b in parsed.ram_blocks)
    if parsed.ram_blocks:
        where = (
            "at fixed file offsets (mapped-ram)" if parsed.ram_blocks[0].mapped else "pages skipped"
        )
        print(f"  RAM: {len(parsed.ram_blocks)} blocks, {ram} bytes of guest memory ({where})")
    for s in parsed.device_sections():
        print(
            f"  {s.section_id:4d}  {s.idstr}  instance {s.instance_id}  v{s.version_id}  {s.end - s.start} bytes at {s.start:#x}"
        )
    for d in vfio:
        config = "config state VFIOPCIDevice" if d.config is not None else "no config state"
        data = f"device data {d.data_size} bytes in {len(d.chunks)} chunks"
        if d.data_format is not None:
            data += f" as {d.data_format.name}" if d.data is not None else " (too large to decode)"
        print(f"  vfio  {d.idstr}  sections {d.layout()}: {config}, {data}")
