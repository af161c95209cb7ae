"""The `vlp` command: `vlp ground`, `vlp push`, `vlp card`, `vlp radiomics`, `vlp prepare`, `vlp demo-data`."""
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


def _card_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run's output folder (its final/ is pushed) or a saved model folder")
    p.add_argument("repo_id", help="the Hub repo, e.g. my-lab/cxr-clip-base")
    p.add_argument("--eval", help="an evaluation record (recipes/evaluate_zeroshot.py --json) for the card")
    p.add_argument("--card-text", help="a Markdown file whose text is added to the card")
    p.add_argument("--license", default="other", help="the card's license id (default: other)")
    p.add_argument("--dataset", action="append", dest="datasets", help="a Hub dataset id the model was trained on")


def _push_arguments(p: argparse.ArgumentParser) -> None:
    _card_arguments(p)
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--revision", help="push to this branch (created when missing) instead of main")


def _push(args) -> int:
    from vlp.hub import HubPushError, push

    card_text = open(args.card_text).read() if args.card_text else None
    try:
        url = push(args.run_dir, args.repo_id, private=args.private, revision=args.revision, evaluation=args.eval,
                   card_text=card_text, license=args.license, datasets=args.datasets)
    except (HubPushError, ValueError, FileNotFoundError) as err:
        print(f"vlp push: {err}", file=sys.stderr)
        return 1
    print(f"pushed {args.run_dir} to {args.repo_id}: {url}")
    return 0


def _card(args) -> int:
    from vlp.hub import HubPushError, prepare_card

    card_text = open(args.card_text).read() if args.card_text else None
    try:
        _, _, card = prepare_card(args.run_dir, args.repo_id, evaluation=args.eval, card_text=card_text,
                                  license=args.license, datasets=args.datasets)
    except (HubPushError, ValueError, FileNotFoundError) as err:
        print(f"vlp card: {err}", file=sys.stderr)
        return 1
    print(card, end="")
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

    p = sub.add_parser("push", help="share a trained model on the Hugging Face Hub, with a model card")
    _push_arguments(p)
    commands["push"] = _push

    p = sub.add_parser("card", help="print the model card `vlp push` would write (nothing is pushed)")
    _card_arguments(p)
    commands["card"] = _card

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
