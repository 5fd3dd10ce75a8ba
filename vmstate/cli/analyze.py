"""``vmstate analyze FILE``: decode every device section of a QEMU migration stream
(bare, or in a libvirt save image, raw or compressed)."""

from __future__ import annotations

import argparse
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from typing import Any

    from vmstate import qemu_vfio, stream
    from vmstate.inputs import StreamInput
    from vmstate.sources import Decoder


def register(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Decode every device section of a QEMU migration stream using its vmdesc "
        "(or description files given with --descriptions). The stream may be in a libvirt save "
        "image (virsh save, managedsave), raw or compressed."
    )
    p.add_argument(
        "file",
        help="migration stream (e.g. written by QMP migrate exec:cat > FILE), libvirt save "
        "image, - for standard input, or a pipe",
    )
    p.add_argument(
        "--format",
        choices=("summary", "json", "qemu"),
        default="summary",
        help="summary: one line per section (default); json: the whole stream as a document "
        "vmstate encode writes back; qemu: what QEMU's scripts/analyze-migration.py -d state "
        "prints, byte for byte",
    )
    p.add_argument("--json", action="store_true", help="the same as --format json")
    p.add_argument(
        "--raw-bytes",
        choices=("reference", "inline"),
        default="reference",
        help="with --format json, what is not decoded (RAM, vfio sections): by reference to "
        "FILE with a checksum (default; a pipe is always inline), or inline as hex",
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
    from vmstate.errors import UsageError
    from vmstate.inputs import open_stream

    form = "json" if args.json else args.format
    if args.json and args.format not in ("summary", "json"):
        raise UsageError(f"--json and --format {args.format} ask for two outputs")
    with open_stream(args.file) as opened:
        if args.dump == "desc":
            return _dump_desc(opened)
        decoder = _decoder(args.descriptions)
        if args.extract_ram:
            return _extract_ram(opened, decoder, args.extract_ram)
        parsed = _parse(opened, decoder)
        return _report(args, form, opened, parsed, decoder)


def _decoder(descriptions: str | None) -> Decoder | None:
    """The descriptions asked for; None: the stream's own vmdesc."""
    if descriptions is None:
        return None
    from vmstate.sources import load_decoder

    return load_decoder(descriptions)


def _parse(opened: StreamInput, decoder: Decoder | None, page_sink: Any = None) -> stream.Stream:
    from vmstate import stream, vfio_section
    from vmstate.progress import TerminalProgress

    with TerminalProgress(f"reading {opened.name}") as progress:
        return stream.parse(
            opened.data,
            decoder.resolver if decoder is not None else None,
            page_sink=page_sink,
            raw=vfio_section.raw_sections,
            fitter=decoder.layouts if decoder is not None else None,
            progress=progress,
        )


def _dump_desc(opened: StreamInput) -> int:
    from vmstate import stream
    from vmstate.errors import InputError

    at = stream.find_vmdesc(opened.data)
    if at is None:
        raise InputError(
            "the stream has no vmdesc (QEMU writes one unless suppress-vmdesc is on or it "
            "was a postcopy)",
            opened.name,
        )
    _print_qemu_json(stream.parse_vmdesc(opened.data, at))
    return 0


def _extract_ram(opened: StreamInput, decoder: Decoder | None, directory: str) -> int:
    from vmstate.ram_extract import RamExtractor

    extractor = RamExtractor(directory, opened.data)
    try:
        parsed = _parse(opened, decoder, page_sink=extractor)
        paths = extractor.finish(parsed.ram_blocks)
    except BaseException:
        extractor.abandon()
        raise
    for path in paths:
        print(f"{path}: {path.stat().st_size} bytes")
    return 0


def _report(
    args: argparse.Namespace,
    form: str,
    opened: StreamInput,
    parsed: stream.Stream,
    decoder: Decoder | None,
) -> int:
    from vmstate import analyze

    vfio = _vfio(parsed, opened, args.device_data)
    if args.verify_roundtrip:
        return _verify(parsed, opened, vfio)
    if form == "qemu":
        from vmstate.indented_json import dump_items

        dump_items(analyze.qemu_sections(parsed), sys.stdout.write)
        sys.stdout.write("\n")
    elif form == "json":
        from vmstate.indented_json import dumps
        from vmstate.progress import TerminalProgress
        from vmstate.stream_document import document

        with TerminalProgress(f"documenting {opened.name}") as progress:
            doc = document(
                opened,
                parsed,
                own_vmdesc=decoder is None,
                raw_bytes=args.raw_bytes,
                vfio=vfio,
                progress=progress,
            )
        sys.stdout.write(dumps(doc, indent=1) + "\n")
    else:
        _summary(opened, parsed, vfio)
        if decoder is not None and decoder.layouts is not None:
            fitted = decoder.layouts.fitted.values()
            read = sum(f.described for f in fitted)
            print(
                f"  from the dump: {read} sections read field by field, "
                f"{len(fitted) - read} as opaque bytes (no device class, or several readings fit)"
            )
    return 0


def _vfio(
    parsed: stream.Stream, opened: StreamInput, device_data: str | None
) -> tuple[qemu_vfio.VfioSections, ...]:
    """The stream's VFIO devices (the VFIO and PCI code is loaded only for streams with some)."""
    from vmstate.vfio_section import raw_sections

    if not any(raw_sections(s.idstr) for s in parsed.sections):
        return ()
    from vmstate import qemu_vfio, registry

    data_format = registry.get(device_data) if device_data else None
    return qemu_vfio.gather(parsed, opened.data, data_format)


def _verify(
    parsed: stream.Stream, opened: StreamInput, vfio: tuple[qemu_vfio.VfioSections, ...]
) -> int:
    from vmstate import analyze

    checked, mismatches = analyze.verify_roundtrip(parsed, opened.data)
    vfio_checked, vfio_mismatches = 0, ()
    if vfio:
        from vmstate import qemu_vfio

        vfio_checked, vfio_mismatches = qemu_vfio.verify(vfio, opened.data)
    checked, mismatches = checked + vfio_checked, mismatches + vfio_mismatches
    for m in mismatches:
        print(
            f"{m.section.idstr} (section {m.section.section_id}): re-encoding differs at offset "
            f"{m.offset:#x}: stream {m.expected.hex()} re-encoded {m.found.hex()}",
            file=sys.stderr,
        )
    print(
        f"verified {checked} device sections: {checked - len(mismatches)} byte-identical, "
        f"{len(mismatches)} differ"
    )
    return 1 if mismatches else 0


def _print_qemu_json(data: Any) -> None:
    """As QEMU's analyze-migration.py prints (json.JSONEncoder(indent=4,
    separators=(',', ': ')), then print's newline): the same bytes."""
    from vmstate.indented_json import dumps

    sys.stdout.write(dumps(data) + "\n")


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
