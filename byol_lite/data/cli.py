"""``python -m byol_lite data {check,synthetic,prepare-voc}``: the data sub-commands, next to the code they drive."""
from __future__ import annotations

import json
import time


def _check(args) -> int:
    from byol_lite.data.check import check_dataset

    report = check_dataset(args.root, splits=args.split or None, convert_rgb=args.convert_rgb)
    print(report.format(max_per_kind=None if args.all else 20))
    return 0 if report.ok else 1


def _synthetic(args) -> int:
    from byol_lite.data.synthetic import DEFAULT_SIZES, available_cpus, build_synthetic, is_current, read_manifest

    sizes = {k: getattr(args, k) for k in DEFAULT_SIZES if getattr(args, k) is not None}
    fresh = args.force or not is_current(args.out, args.seed, args.embedded, **sizes)
    t0 = time.perf_counter()
    out = build_synthetic(args.out, seed=args.seed, force=args.force, embedded=args.embedded, **sizes)
    seconds = time.perf_counter() - t0
    state = f"generated in {seconds:.1f} s (up to {available_cpus()} processes)" if fresh else "up to date (manifest matches)"
    print(f"{out}: {state}")
    manifest = read_manifest(out)
    print(json.dumps({k: manifest[k] for k in ("dataset", "version", "seed", "sizes", "pixel_shares")}, indent=2))
    return 0


def _prepare_voc(args) -> int:
    from byol_lite.data.prepare_voc import SBD_MD5, VOC_MD5, prepare_voc

    prepare_voc(args.dest, voc_tar=args.voc_tar, sbd_tgz=args.sbd_tgz,
                voc_md5=None if args.no_verify else VOC_MD5, sbd_md5=None if args.no_verify else SBD_MD5)
    return 0


def add_cli(subparsers) -> None:
    from byol_lite.config import NON_NEGATIVE, bounded
    from byol_lite.data.synthetic import DATASETS, DEFAULT_SIZES, SIZE_RANGES, default_sizes

    data = subparsers.add_parser("data", help="datasets: check, generate the embedded set, prepare real VOC",
                                 description="Datasets: check a VOC-layout dataset, generate the embedded "
                                             "synthetic one, or download and prepare real VOC 2012 + SBD.")
    sub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")

    p = sub.add_parser("check", help="scan a VOC-layout dataset and report every problem, with counts")
    p.add_argument("root", metavar="ROOT", help="folder that contains VOCdevkit/")
    p.add_argument("--split", action="append", metavar="SPLIT",
                   help="split to check (repeatable; default: every list found)")
    p.add_argument("--convert-rgb", action="store_true",
                   help="rewrite colour-coded RGB masks in place as palette PNGs of class indices")
    p.add_argument("--all", action="store_true", help="list every problem, not the first 20 of each kind")
    p.set_defaults(func=_check)

    p = sub.add_parser("synthetic", help="generate an embedded dataset (VOC layout): shapes, the default, or objects")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write (it will contain VOCdevkit/)")
    p.add_argument("--seed", type=bounded("seed", int, NON_NEGATIVE), default=0, help="generator seed (default: 0)")
    p.add_argument("--embedded", choices=list(DATASETS), default="shapes",
                   help="shapes: five shape classes with textures independent of the class (default); objects: "
                        "five object prototypes varied only as BYOL's views vary them")
    for name, default in DEFAULT_SIZES.items():
        objects = default_sizes("objects")[name]
        note = f" ({objects} for objects)" if objects != default else ""
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=bounded(name, int, SIZE_RANGES[name]),
                       default=None, metavar="N", help=f"default: {default}{note}")
    p.add_argument("--force", action="store_true", help="regenerate even if the manifest matches")
    p.set_defaults(func=_synthetic)

    p = sub.add_parser("prepare-voc", help="download VOC 2012 + SBD (md5-checked) and build train_aug")
    p.add_argument("dest", metavar="DEST", help="folder that will contain VOCdevkit/")
    p.add_argument("--voc-tar", metavar="PATH", help="use this VOCtrainval_11-May-2012.tar instead of downloading")
    p.add_argument("--sbd-tgz", metavar="PATH", help="use this SBD benchmark.tgz instead of downloading")
    p.add_argument("--no-verify", action="store_true", help="skip the md5 checks (not recommended)")
    p.set_defaults(func=_prepare_voc)
