"""``python -m ssd_jax.export``: export a trained detector with NMS in the graph (see ssd_jax.export)."""

from __future__ import annotations

import os

from ssd_jax import cli
from ssd_jax.export._common import FORMATS, PLATFORMS


def main(argv=None) -> int:
    p = cli.parser("ssd_jax.export", (
        "Export a training workdir's detector (normalisation, network, box decoding and NMS in one graph) "
        "as StableHLO, a TF SavedModel, ONNX or TFLite; writes <out>.json with class names and thresholds."))
    p.add_argument("--workdir", required=True, help="training workdir (model.json + checkpoints)")
    p.add_argument("--checkpoint", default="best", help="best (default; falls back to latest), latest or a step")
    p.add_argument("--format", required=True, help=f"one of {', '.join(FORMATS)}")
    p.add_argument("--out", required=True, help="artifact path (a folder for saved_model)")
    p.add_argument("--batch", default=None, help="batch size N or 'dynamic' (default: dynamic; 1 for tflite)")
    p.add_argument("--platforms", default="cpu",
                   help=f"comma-separated lowering platforms for stablehlo / saved_model, of {', '.join(PLATFORMS)} "
                        "(default cpu)")
    p.add_argument("--resize", action="store_true",
                   help="accept any image size and resize in the graph (default: the model input size)")
    args, _ = cli.parse(p, argv)
    from ssd_jax.export import export_detector

    meta = export_detector(args.workdir, args.out, format=args.format, checkpoint=args.checkpoint,
                           batch=args.batch, platforms=args.platforms, resize=args.resize)
    size = _size(args.out)
    print(f"wrote {args.out} ({args.format}, {size / 1e6:.1f} MB, batch {meta['batch']}, input "
          f"{'any size' if meta['resize_in_graph'] else 'x'.join(map(str, meta['input_size']))}) and "
          f"{os.path.normpath(args.out)}.json")
    return cli.EXIT_OK


def _size(path: str) -> int:
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)
    return os.path.getsize(path)


if __name__ == "__main__":
    cli.exit_with(main)
