"""``python -m ssd_jax.export``: export a trained detector with NMS in the graph (see ssd_jax.export)."""

from __future__ import annotations

import argparse
import os
import sys

from ssd_jax.export import FORMATS, PLATFORMS, ExportError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ssd_jax.export", description=(
        "Export a training workdir's detector (normalisation, network, box decoding and NMS in one graph) "
        "as StableHLO, a TF SavedModel, ONNX or TFLite; writes <out>.json with class names and thresholds."))
    parser.add_argument("--workdir", required=True, help="training workdir (model.json + checkpoints)")
    parser.add_argument("--checkpoint", default="best", help="best (default; falls back to latest), latest or a step")
    parser.add_argument("--format", required=True, help=f"one of {', '.join(FORMATS)}")
    parser.add_argument("--out", required=True, help="artifact path (a folder for saved_model)")
    parser.add_argument("--batch", default=None,
                        help="batch size N or 'dynamic' (default: dynamic; 1 for tflite)")
    parser.add_argument("--platforms", default="cpu",
                        help=f"comma-separated lowering platforms for stablehlo / saved_model, of {', '.join(PLATFORMS)} "
                             "(default cpu)")
    parser.add_argument("--resize", action="store_true",
                        help="accept any image size and resize in the graph (default: the model input size)")
    args = parser.parse_args(argv)
    try:
        from ssd_jax.export import export_detector

        meta = export_detector(args.workdir, args.out, format=args.format, checkpoint=args.checkpoint,
                               batch=args.batch, platforms=args.platforms, resize=args.resize)
    except (ExportError, FileNotFoundError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # e.g. a checkpoint that does not fit model.json
        print(f"error: {e}", file=sys.stderr)
        return 2
    size = _size(args.out)
    print(f"wrote {args.out} ({args.format}, {size / 1e6:.1f} MB, batch {meta['batch']}, input "
          f"{'any size' if meta['resize_in_graph'] else 'x'.join(map(str, meta['input_size']))}) and "
          f"{os.path.normpath(args.out)}.json")
    return 0


def _size(path: str) -> int:
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)
    return os.path.getsize(path)


if __name__ == "__main__":
    sys.exit(main())
