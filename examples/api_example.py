"""Segment a video from Python and write YouTube-VIS results: the library under ``videomt segment``.

    python examples/api_example.py input.mp4 -o input.json
    python examples/api_example.py input.mp4 -o input.json --model my_model_dir/ --min-size 448

The three steps are the whole API: load a model into a ``Predictor``, ``run`` it over a video
(frames are decoded, batched and post-processed in constant memory; ``result`` is a
``records.VideoResult`` with one ``Segment`` per track), and hand the result to a sink, which
writes the file atomically when its ``with`` block ends.
"""

from __future__ import annotations

import argparse

from videomt_cli import masks, writers
from videomt_cli.predictor import Predictor, TimeSpec


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", help="a video file or a folder of frame images")
    parser.add_argument("-o", "--output", required=True, help="where to write the YouTube-VIS results JSON")
    parser.add_argument("--model", default=None, help="registry name, hub id, directory or checkpoint file "
                        "(default: the registry's default model)")
    parser.add_argument("--min-size", type=int, default=None, help="short side fed to the network "
                        "(default: the model's)")
    parser.add_argument("--start", default=None, help="first frame: a frame number or a time such as 2.5s")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    args = parser.parse_args(argv)

    predictor = Predictor.from_model(args.model, device=args.device, min_size=args.min_size)
    result = predictor.run(args.video, start=TimeSpec.parse(args.start, "--start"))

    names = {c.id: c.name for c in result.categories}
    for seg in result.segments[:5]:
        visible = sum(m is not None and not masks.is_empty(m) for m in seg.masks)  # None: frame skipped
        print(f"track {seg.track_id}: {names[seg.category_id]} score {seg.score:.3f} ({visible} frames)")

    with writers.open_sink(args.output, "ytvis") as sink:
        sink.add(result)
    print(f"wrote {args.output}: {len(result.segments)} results over {len(result.processed)} frames")


if __name__ == "__main__":
    main()
