"""CVAT for video 1.1 XML (``--format cvat``, ``.xml``): one video's tracks as polygon or box
tracks, the file CVAT's "Upload annotations" takes as "CVAT 1.1" for a task made from that video.
No torch.

The layout is the one CVAT exports and imports (``cvat/apps/dataset_manager/formats/cvat.py`` in
cvat-ai/cvat: ``dump_as_cvat_interpolation`` writes it, ``load_anno`` reads it; datumaro's
``plugins/data_formats/cvat/base.py`` reads it too)::

    <?xml version="1.0" encoding="utf-8"?>
    <annotations>
      <version>1.1</version>
      <meta><task> name, size, mode=interpolation, overlap, subset, start_frame=0, stop_frame,
        labels (name, color, type, attributes), original_size (width, height), source </task></meta>
      <track id="3" label="dog" source="auto" [group_id="3"]>
        <polygon frame="0" keyframe="1" outside="0" occluded="0" points="x,y;x,y;..." z_order="0">
          <attribute name="score">0.912345</attribute>
        </polygon> ...
      </track> ...
    </annotations>

Rules:

- **One video per file** (a CVAT task is one video; frame numbers are the video's, 0-based, all
  of them: ``size`` = frames, ``stop_frame`` = frames - 1). Semantic results have no objects and
  are refused, as in MOT.
- **Labels**: every category of the result's label table is declared (not only the used ones), so
  every video of one model declares the same labels and the files of several videos fit one CVAT
  project; a task must have these labels (by name) before the upload: CVAT refuses a track whose
  label the task lacks. Each label declares ``score`` as a mutable ``number`` attribute with
  ``values`` min 0, max 1 (or the highest score, if above), step 0.000001 (CVAT's label editor wants
  exactly three numbers, min < max, 0 < step <= max - min; ``mutable`` written as CVAT writes it,
  ``True``). CVAT keeps a shape's attribute only when the label declares it (mutable ones per shape).
- **One track per object** (``VideoResult`` segment), ``id`` = the object's track id (datumaro
  reads it back as ``track_id``; CVAT numbers tracks itself), ``source="auto"``. An object with no
  pixel on any processed frame gets no track (CVAT's importer fails on a track without shapes).
- **Shapes**: on every processed frame where the object has pixels, a ``keyframe="1"``
  ``outside="0"`` shape with ``occluded="0"``, ``z_order="0"`` and the track's score as
  ``<attribute name="score">`` (6 decimals). When the object is gone, an ``outside="1"`` keyframe
  (same points as its last shape, as CVAT writes them) on the first processed frame where it is
  absent, or, after the last processed frame, on the next frame - never past the video's last
  frame. A later visible frame starts it again.
- **Frames not processed** (``--stride``, ``--start``/``--end``) carry no shape: CVAT interpolates
  between the keyframes around them (and holds the last shape until an ``outside``); they are not
  marked ``outside``. Before an object's first keyframe CVAT shows nothing.
- **Polygons** (``shape="polygon"``, default) come from ``io.polygons.mask_polygons``: vertices on
  pixel corners, so pycocotools-style rasterising gives back each part's pixels exactly; holes are
  filled (a polygon cannot hold one). ``tolerance`` > 0 simplifies them (Douglas-Peucker, pixels).
- **Several parts**: the track carries the object's largest part; every other part on that frame
  becomes its own one-frame track (CVAT for video has no shapes outside tracks: CVAT's own exporter
  writes a standalone shape as a track with a keyframe and an ``outside`` one frame on): same label,
  a keyframe on that frame and an ``outside`` on the next frame (next processed frame, or the
  next frame after the last processed one, never past the last frame). The object's track and its
  parts carry ``group_id`` = the object's track id; part tracks take ids above every object's. To
  read the whole mask back: on each frame, union the shapes of the tracks of one group; the track
  whose ``id`` equals its ``group_id`` is the object. Objects in one part have no ``group_id``.
- **Boxes** (``shape="box"``): ``<box xtl ytl xbr ybr>`` = the mask's bounding box on pixel corners
  (``xbr = x + w``), one box per frame covering all parts (no part tracks).
- Coordinates are written with 2 decimals, as CVAT writes them. UTF-8, escaped by the XML rules.
"""

from __future__ import annotations

import math
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from videomt_cli.errors import InputError, OutputError
from videomt_cli.io import masks as mask_ops
from videomt_cli.io.polygons import mask_polygons
from videomt_cli.records import Category, Segment, VideoResult
from videomt_cli.sinks.base import StreamSink, choice, video_name, writes

SHAPES = ("polygon", "box")
SCORE_STEP = "0.000001"  # the score's 6 written decimals


def _color(c: Category) -> str:
    r, g, b = (max(0, min(255, int(v))) for v in c.color)
    return f"#{r:02x}{g:02x}{b:02x}"


def _points(poly) -> str:
    return ";".join(f"{x:.2f},{y:.2f}" for x, y in poly.tolist())


def source_name(result: VideoResult) -> str:
    """What ``<source>`` names: the video's file name, an image folder's name, or ``video<id>``."""
    info = result.video
    if info.kind == "video" and info.path:
        return Path(info.path).name
    return video_name(result)


class CvatSink(StreamSink):
    """CVAT for video 1.1 XML of one video (module docstring). ``shape``: ``"polygon"`` (default)
    or ``"box"``; ``tolerance``: polygon simplification in pixels (0 = exact outlines)."""

    format = "cvat"
    mode = "wb"

    def __init__(self, path, overwrite: bool = False, shape: str = "polygon", tolerance: float = 0.0) -> None:
        self.shape = choice(shape, SHAPES, "CVAT shape (--cvat-shape)")
        if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance >= 0):
            raise InputError(f"The polygon tolerance must be a number of pixels >= 0, got {tolerance!r}.")
        self.tolerance = float(tolerance)
        super().__init__(path, overwrite)

    def _write(self, text: str) -> None:
        self._f.write(text.encode("utf-8"))

    @writes
    def add(self, result: VideoResult) -> None:
        self.open()
        if self.count:
            raise OutputError(f"{self.path} holds one video's tracks (a CVAT task is one video); write each "
                              f"video to its own file.")
        if result.task == "semantic":
            raise OutputError("--format cvat writes tracked objects; semantic results have none (use png or ytvis).")
        self._write('<?xml version="1.0" encoding="utf-8"?>\n<annotations>\n  <version>1.1</version>\n')
        self._write(self._meta(result))
        next_id = max((s.track_id for s in result.segments), default=0) + 1
        for seg in result.segments:
            next_id = self._write_object(result, seg, next_id)
        self._write("</annotations>\n")
        self.count += 1

    def _finish(self) -> None:
        if not self.count:  # nothing added: still a well-formed (empty) document
            self._write('<?xml version="1.0" encoding="utf-8"?>\n<annotations>\n  <version>1.1</version>\n'
                        '</annotations>\n')
        super()._finish()

    # -- meta

    def _meta(self, result: VideoResult) -> str:
        n = result.num_frames
        top = max([1.0] + [float(s.score) for s in result.segments])
        top_text = "1" if top <= 1.0 else f"{math.ceil(top * 1e6) / 1e6:.6f}"
        lines = ["  <meta>", "    <task>",
                 f"      <name>{escape(video_name(result))}</name>",
                 f"      <size>{n}</size>",
                 "      <mode>interpolation</mode>",
                 "      <overlap>0</overlap>",
                 "      <bugtracker></bugtracker>",
                 "      <subset>default</subset>",
                 "      <start_frame>0</start_frame>",
                 f"      <stop_frame>{max(n - 1, 0)}</stop_frame>",
                 "      <frame_filter></frame_filter>",
                 "      <labels>"]
        seen: set[str] = set()
        for c in result.categories:
            name = self._label(c)
            if name in seen:  # two ids with one name: CVAT labels are unique by name
                continue
            seen.add(name)
            lines += ["        <label>",
                      f"          <name>{escape(name)}</name>",
                      f"          <color>{_color(c)}</color>",
                      "          <type>any</type>",
                      "          <attributes>",
                      "            <attribute>",
                      "              <name>score</name>",
                      "              <mutable>True</mutable>",
                      "              <input_type>number</input_type>",
                      "              <default_value>0</default_value>",
                      f"              <values>0\n{top_text}\n{SCORE_STEP}</values>",  # min, max, step
                      "            </attribute>",
                      "          </attributes>",
                      "        </label>"]
        lines += ["      </labels>",
                  "      <original_size>",
                  f"        <width>{result.video.width}</width>",
                  f"        <height>{result.video.height}</height>",
                  "      </original_size>",
                  f"      <source>{escape(source_name(result))}</source>",
                  "    </task>", "  </meta>", ""]
        return "\n".join(lines)

    @staticmethod
    def _label(c: Category) -> str:
        return c.name if c.name and c.name.strip() else str(c.id)

    def _label_of(self, result: VideoResult, seg: Segment) -> str:
        try:
            return self._label(result.category(seg.category_id))
        except KeyError:
            raise OutputError(f"track {seg.track_id} has category {seg.category_id}, which the result's label "
                              f"table lacks; CVAT needs every label declared.") from None

    # -- tracks

    def _write_object(self, result: VideoResult, seg: Segment, next_id: int) -> int:
        """Write the object's track and its part tracks; return the next free part track id."""
        processed = result.processed
        after = {t: (processed[i + 1] if i + 1 < len(processed) else t + 1) for i, t in enumerate(processed)}
        score = f"{float(seg.score):.6f}"
        label = self._label_of(result, seg)
        shapes: list[tuple[int, str, bool]] = []  # (frame, geometry attributes, outside)
        parts: list[tuple[int, str]] = []  # (frame, geometry) of every part beyond the largest
        last = None  # geometry of the last visible shape
        for t in processed:
            geometry, extra = self._geometry(result.mask(seg, t))
            if geometry is None:
                if last is not None:
                    shapes.append((t, last, True))
                    last = None
                continue
            shapes.append((t, geometry, False))
            parts += [(t, g) for g in extra]
            last = geometry
        if last is not None and after[shapes[-1][0]] < result.num_frames:
            shapes.append((after[shapes[-1][0]], last, True))
        if not shapes:
            return next_id
        group = f' group_id="{seg.track_id}"' if parts else ""
        self._write_track(seg.track_id, label, group, shapes, score)
        for t, g in parts:
            one = [(t, g, False)] + ([(after[t], g, True)] if after[t] < result.num_frames else [])
            self._write_track(next_id, label, group, one, score)
            next_id += 1
        return next_id

    def _geometry(self, rle) -> tuple[str | None, list[str]]:
        """A mask's shape attributes (None when empty) and those of its other parts (polygons)."""
        if rle is None or mask_ops.is_empty(rle):
            return None, []
        if self.shape == "box":
            x, y, w, h = mask_ops.bbox(rle)
            return f'xtl="{x:.2f}" ytl="{y:.2f}" xbr="{x + w:.2f}" ybr="{y + h:.2f}"', []
        polys = mask_polygons(mask_ops.dense(rle), tolerance=self.tolerance)
        texts = [f'points="{_points(p)}"' for p in polys]
        return texts[0], texts[1:]

    def _write_track(self, track_id: int, label: str, group: str, shapes, score: str) -> None:
        tag = "box" if self.shape == "box" else "polygon"
        out = [f'  <track id="{track_id}" label={quoteattr(label)} source="auto"{group}>\n']
        for frame, geometry, outside in shapes:
            out.append(f'    <{tag} frame="{frame}" keyframe="1" outside="{int(outside)}" occluded="0" {geometry} '
                       f'z_order="0">\n      <attribute name="score">{score}</attribute>\n    </{tag}>\n')
        out.append("  </track>\n")
        self._write("".join(out))


__all__ = ["SHAPES", "CvatSink", "source_name"]
