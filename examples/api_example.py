"""Segment a video from Python: per-frame results as they happen, then the video-level YouTube-VIS
results file. The library under ``videomt segment``.

    python examples/api_example.py input.mp4 -o input.json
    python examples/api_example.py input.mp4 -o input.json --model my_model_dir/ --min-size 448

The whole API in three steps: load a model into a ``Predictor``; ``stream`` it over a video (one
``FrameResult`` per frame, with online scores, while frames are decoded, batched and
post-processed in constant memory); then ``stream.result`` is the video-level ``VideoResult``
(the official result, one ``Segment`` per track), handed to a sink that writes the file
atomically when its ``with`` block ends.
"""

from __future__ import annotations

import argparse

from videomt_cli import Predictor, open_sink
from videomt_cli.io import masks


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
    stream = predictor.stream(args.video, start=args.start)
    for frame in stream:
        if frame.index % 16 == 0:
            objects = ", ".join(f"{t}:{c}@{s:.2f}" for t, c, s in zip(frame.track_ids, frame.class_ids, frame.scores))
            print(f"frame {frame.index} ({frame.time:.2f} s): {objects or 'nothing'}")

    with stream.result as result:
        names = {c.id: c.name for c in result.categories}
        for seg in result.segments[:5]:
            visible = sum(m is not None and not masks.is_empty(m) for m in result.masks_of(seg))
            print(f"track {seg.track_id}: {names[seg.category_id]} score {seg.score:.3f} ({visible} frames)")
        with open_sink(args.output, "ytvis") as sink:
            sink.add(result)
    print(f"wrote {args.output}: {len(result.segments)} results over {len(result.processed)} frames")


if __name__ == "__main__":
    main()
