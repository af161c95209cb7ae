"""The `vlp` command: `vlp ground`, `vlp radiomics`, `vlp prepare`, `vlp demo-data`."""
from __future__ import annotations

import argparse
import sys


def _ground_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="saved checkpoint folder")
    p.add_argument("--image", required=True, help="an X-ray (PNG/JPEG, 8 or 16 bit; DICOM with the dicom extra)")
    p.add_argument("--text", required=True, help="the sentence to ground")
    p.add_argument("--out", required=True, help="PNG to write the overlay to")
    p.add_argument("--smooth", type=float, default=0.5, help="Gaussian sigma in grid cells")


def _ground(args) -> int:
    from transformers import AutoModel, AutoProcessor

    import vlp  # noqa: F401  (registers the Auto classes)
    from vlp.data.images import load_image
    from vlp.grounding import plot_overlay, similarity_map

    model = AutoModel.from_pretrained(args.model).eval()
    processor = AutoProcessor.from_pretrained(args.model)
    image = load_image(args.image)
    heatmap = similarity_map(model, processor, image, args.text, smooth_sigma=args.smooth)
    path = plot_overlay(image, heatmap, args.out, title=args.text)
    print(f"wrote {path}")
    return 0


def _demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", help="folder (default: the demo cache folder)")
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--n-test", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)


def _demo(args) -> int:
    from vlp.training.config import DataSection
    from vlp.training.data import demo_manifest

    manifest = demo_manifest(DataSection(demo_dir=args.out, demo_train=args.n_train, demo_test=args.n_test,
                                         demo_seed=args.seed))
    print(manifest)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="vlp", description="vision-language pretraining for chest X-rays")
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {}

    p = sub.add_parser("ground", help="write a phrase-grounding overlay PNG")
    _ground_arguments(p)
    commands["ground"] = _ground

    p = sub.add_parser("demo-data", help="generate the built-in demo phantoms and print the manifest path")
    _demo_arguments(p)
    commands["demo-data"] = _demo

    try:
        from vlp.radiomics import cli as radiomics_cli
        p = sub.add_parser("radiomics", help="radiomic features of every image/mask or box row of a manifest")
        radiomics_cli.add_arguments(p)
        commands["radiomics"] = radiomics_cli.run
    except ImportError as err:  # pyradiomics is an extra
        commands["radiomics"] = None
        sub.add_parser("radiomics", help=f"unavailable: {err}")

    from vlp.data.adapters import cli as prepare_cli
    p = sub.add_parser("prepare", help="turn a public dataset's release into a manifest")
    prepare_cli.add_arguments(p)
    commands["prepare"] = prepare_cli.run

    args = parser.parse_args(argv)
    command = commands[args.command]
    if command is None:
        parser.error(f"`vlp {args.command}` needs an extra that is not installed")
    return command(args)


if __name__ == "__main__":
    sys.exit(main())
