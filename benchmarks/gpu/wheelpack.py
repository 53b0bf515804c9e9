"""Carry a wheel to the lent GPU in fewer parts: its files as one xz-compressed tar, installed by extraction and
checked file by file against the wheel's own RECORD.

    python benchmarks/gpu/wheelpack.py pack WHEEL PACK.tar.xz     here, once (xz -9: onnxruntime-gpu's 244 MiB wheel
                                                                  packs into about 194 MiB, so 4 parts instead of 5)
    python benchmarks/gpu/wheelpack.py install PACK.tar.xz SITE   on the device: extract into SITE (as pip install
                                                                  --target would), then check every file's sha256
                                                                  and size against the wheel's RECORD

Exit 0 when every file matches, 2 with one line naming the first that does not (or a pack that is no wheel's).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path


def pack(wheel: Path, out: Path) -> None:
    """The wheel's files, in its order, as a tar compressed with xz -9 (the xz tool on every core where there is
    one, else Python's lzma)."""
    tmp = out.with_name(out.name + ".partial")
    xz = shutil.which("xz")
    with zipfile.ZipFile(wheel) as z, open(tmp, "wb") as sink:
        proc = subprocess.Popen([xz, "-9", "-T0", "-c"], stdin=subprocess.PIPE, stdout=sink) if xz else None
        tar = tarfile.open(fileobj=proc.stdin, mode="w|") if proc else tarfile.open(fileobj=sink, mode="w:xz", preset=9)
        with tar:
            for info in z.infolist():
                if info.is_dir():
                    continue
                member = tarfile.TarInfo(info.filename)
                member.size, member.mtime = info.file_size, 0
                member.mode = (info.external_attr >> 16) & 0o777 or 0o644
                with z.open(info) as data:
                    tar.addfile(member, data)
        if proc:
            proc.stdin.close()
            if proc.wait() != 0:
                raise OSError(f"xz failed ({proc.returncode}) packing {wheel}")
    tmp.replace(out)


def install(pack_path: Path, site: Path) -> int:
    """Extract the pack into `site` and check it against the RECORD it carries; the number of files checked."""
    site.mkdir(parents=True, exist_ok=True)
    with tarfile.open(pack_path, "r:xz") as tar:
        names = tar.getnames()
        records = [n for n in names if n.count("/") == 1 and n.endswith(".dist-info/RECORD")]
        if len(records) != 1:
            raise ValueError(f"{pack_path} holds {len(records)} wheel RECORDs, not one: not a wheelpack pack")
        tar.extractall(site, filter="data")
    checked = 0
    for row in csv.reader(io.StringIO((site / records[0]).read_text())):
        if not row or not row[1]:  # RECORD lists itself without a hash
            continue
        path, digest, size = row[0], row[1], row[2]
        algorithm, _, expected = digest.partition("=")
        data = (site / path).read_bytes() if (site / path).is_file() else None
        if data is None or path not in names:
            raise ValueError(f"{path}, listed in the wheel's RECORD, is not in the pack")
        got = base64.urlsafe_b64encode(hashlib.new(algorithm, data).digest()).rstrip(b"=").decode()
        if got != expected or (size and int(size) != len(data)):
            raise ValueError(f"{path} does not match the wheel's RECORD ({algorithm} {got}, RECORD says {expected})")
        checked += 1
    return checked


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("pack", "install"):
        print(__doc__.strip().splitlines()[0], "\nusage: wheelpack.py pack WHEEL PACK.tar.xz | install PACK SITE",
              file=sys.stderr)
        return 2
    try:
        if argv[0] == "pack":
            pack(Path(argv[1]), Path(argv[2]))
            print(f"packed {argv[1]} into {argv[2]} ({Path(argv[2]).stat().st_size / 2**20:.1f} MiB)")
        else:
            count = install(Path(argv[1]), Path(argv[2]))
            print(f"installed {argv[1]} into {argv[2]}: {count} files match the wheel's RECORD")
    except (OSError, ValueError, tarfile.TarError, zipfile.BadZipFile) as err:
        print(f"wheelpack: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
