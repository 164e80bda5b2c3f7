"""Files in the exact layouts the real tools write (issue #23), made by the tests themselves.

WSInfer 0.6.1 (``wsinfer run ... --patch-overlap-ratio 0.5``): its CSV
``minx,miny,width,height,prob_notumor,prob_Tumor`` with patches sorted by x, then y (y changes
fastest), centres every ``step`` px from half a patch while inside the slide, so the last
column and row run past the right and bottom edges; its GeoJSON: one Feature per patch, a
uuid ``id``, a clockwise box ring starting at (maxx, miny) with float coordinates,
``properties`` ``isLocked: true``, ``measurements`` as a dict, ``objectType: "tile"``.

QuPath 0.2 (type in the feature ``id``, ``colorRGB``, measurements as a list), 0.3
(``object_type``) and 0.4+ (``objectType``, uuid ids, ``classification`` with ``name`` or, for
derived classes, ``names``, and an RGB ``color``).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import shapely
from PIL import Image
from scipy import ndimage
from shapely.geometry import shape

from napari_lsr.cli import main
from napari_lsr.evaluate.evaluation import paint_labels, resample_to_grid
from napari_lsr.evaluate.metrics import masked_scores
from napari_lsr.io.formats import FormatError, read_truth, write_prediction
from napari_lsr.io.interop import export_geojson, read_lowres

ROOT = Path(__file__).resolve().parents[1]


# -- WSInfer's layouts -------------------------------------------------------------------------


def wsinfer_boxes(width: int, height: int, size: int, overlap: float) -> list[tuple[int, int]]:
    """WSInfer 0.6.1's patch corners (patchlib: centres from size/2 every round((1 -
    overlap) size) px while inside the slide; sorted by x, y changing fastest)."""
    half, step = size // 2, round((1 - overlap) * size)
    return [
        (cx - half, cy - half)
        for cx in range(half, width, step)
        for cy in range(half, height, step)
    ]


def tumour_prob(x: int, y: int) -> float:
    return round(0.05 + 0.9 * ((x // 50 + y // 50) % 7) / 6, 8)


def write_wsinfer(tmp_path: Path, width: int, height: int, size: int, overlap: float):
    """WSInfer's model-outputs-csv and model-outputs-geojson files of one slide."""
    corners = wsinfer_boxes(width, height, size, overlap)
    lines = ["minx,miny,width,height,prob_notumor,prob_Tumor"]
    feats = []
    for x, y in corners:
        p = tumour_prob(x, y)
        lines.append(f"{x},{y},{size},{size},{1 - p:.8f},{p:.8f}")
        x1, y1 = float(x + size), float(y + size)
        ring = [[x1, float(y)], [x1, y1], [float(x), y1], [float(x), float(y)], [x1, float(y)]]
        feats.append(
            {
                "type": "Feature",
                "id": str(uuid.uuid4()),
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {
                    "isLocked": True,
                    "measurements": {"prob_notumor": 1 - p, "prob_Tumor": p},
                    "objectType": "tile",
                },
            }
        )
    csv_path = tmp_path / "model-outputs-csv" / "S1.csv"
    gj_path = tmp_path / "model-outputs-geojson" / "S1.geojson"
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    gj_path.parent.mkdir(parents=True, exist_ok=True)
    csv_path.write_text("\n".join(lines) + "\n")
    gj_path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return csv_path, gj_path, corners


@pytest.mark.parametrize("kind", ["csv", "geojson"])
def test_wsinfer_overlapping_patches_are_read(tmp_path, kind):
    """Finding 1: --patch-overlap-ratio 0.5 (100 px patches every 50 px) is read, not refused
    as off the patch grid; every patch is a block."""
    csv_path, gj_path, corners = write_wsinfer(tmp_path, 600, 600, 100, 0.5)
    labels = read_lowres(csv_path if kind == "csv" else gj_path, (600, 600))
    assert len(labels) == len(corners) == 121
    assert sorted(zip(labels.x.tolist(), labels.y.tolist())) == sorted(corners)
    assert (labels.width == 100).all() and (labels.height == 100).all()
    want = np.array([tumour_prob(x, y) for x, y in corners])
    assert np.allclose(labels.probability, want, atol=1e-7)


def test_overlapping_patches_are_painted_from_their_centres(tmp_path):
    """The low-resolution model of overlapping patches: each pixel takes the probability of
    the patch whose centre is nearest (the step x step cell around each centre)."""
    csv_path, _, corners = write_wsinfer(tmp_path, 600, 600, 100, 0.5)
    labels = read_lowres(csv_path, (600, 600))
    painted = paint_labels(labels, (600, 600), 1)
    for x, y in [(0, 0), (250, 300), (500, 500), (150, 50)]:
        cx, cy = x + 50, y + 50  # the patch's centre and the 50 x 50 cell around it
        assert np.allclose(painted[cy - 25 : cy + 25, cx - 25 : cx + 25], tumour_prob(x, y))
    # the half step at the slide's edges takes a covering patch's probability
    assert painted[0, 0] == np.float32(tumour_prob(0, 0))


def test_block_review_heat_map_of_overlapping_patches_follows_the_centres(tmp_path):
    """The Block review's bin overlay paints overlapping patches as the low-resolution model
    does (nearest centre), not the last patch painted over its neighbours."""
    from napari_lsr.layers import labels_raster

    csv_path, _, _ = write_wsinfer(tmp_path, 600, 600, 100, 0.5)
    labels = read_lowres(csv_path, (600, 600))
    raster, cell = labels_raster(labels, (600, 600))
    full = np.kron(raster, np.ones((cell, cell), np.uint8))[:600, :600]
    bins = replace(labels, probability=labels.bin.astype(np.float64))  # paint bins, not p
    want = paint_labels(bins, (600, 600), 1).astype(np.uint8) + 1
    assert (full == want).all()


@pytest.mark.parametrize("kind", ["csv", "geojson"])
def test_wsinfer_edge_patches_are_clipped_to_the_slide(tmp_path, kind):
    """Finding 2: patches whose centre is in the slide but which run past its right or bottom
    edge are clipped to the part inside (not refused as reaching outside the slide)."""
    csv_path, gj_path, corners = write_wsinfer(tmp_path, 590, 570, 100, 0.0)
    labels = read_lowres(csv_path if kind == "csv" else gj_path, (590, 570))
    assert len(labels) == len(corners) == 36
    right = labels.x == 500
    bottom = labels.y == 500
    assert (labels.width[right] == 90).all() and (labels.width[~right] == 100).all()
    assert (labels.height[bottom] == 70).all() and (labels.height[~bottom] == 100).all()
    assert ((labels.x + labels.width).max(), (labels.y + labels.height).max()) == (590, 570)


def test_wsinfer_overlap_and_edge_patches_through_the_command_line(tmp_path, capsys):
    """Overlap 0.5 on a slide whose tissue reaches the edges: evaluate reads the labels."""
    import tifffile

    size = (640, 640)
    rgb = np.full((*size, 3), 200, np.uint8)
    rgb[:, :320] = (150, 60, 160)
    slide = tmp_path / "S1.tif"
    tifffile.imwrite(slide, rgb, photometric="rgb", resolution=(2e4, 2e4), resolutionunit=3)
    truth = np.zeros(size, np.uint8)
    truth[:, :320] = 255
    Image.fromarray(truth).save(tmp_path / "truth.png")
    csv_path, gj_path, corners = write_wsinfer(tmp_path, *size, 100, 0.5)
    assert max(x for x, _ in corners) + 100 > size[0]  # the last column runs past the edge
    for labels in (csv_path, gj_path):
        code = main(
            ["evaluate", "--truth", str(tmp_path / "truth.png"), "--slide", str(slide)]
            + ["--labels", str(labels), "--band-px", "100"]
        )
        out = capsys.readouterr()
        assert code == 0, out.err
        assert "low resolution" in out.out


# -- QuPath's GeoJSON as ground truth -------------------------------------------------------


def square(x: int, y: int, s: int) -> list:
    return [[[x, y], [x + s, y], [x + s, y + s], [x, y + s], [x, y]]]


def qupath_04(geometry: dict, cls: dict | str | None, object_type: str = "annotation") -> dict:
    props: dict = {"objectType": object_type}
    if cls is not None:
        props["classification"] = cls
    return {"type": "Feature", "id": str(uuid.uuid4()), "geometry": geometry, "properties": props}


def poly(x: int, y: int, s: int) -> dict:
    return {"type": "Polygon", "coordinates": square(x, y, s)}


def write_geojson(tmp_path: Path, feats: list, name: str = "truth.geojson") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return path


TUMOR_POS = {"names": ["Tumor", "Positive"], "color": [200, 0, 0]}
STROMA_NEG = {"names": ["Stroma", "Negative"], "color": [150, 200, 150]}


def test_qupath_derived_classes_are_matched_by_their_first_name(tmp_path):
    """Finding 3: QuPath 0.4+ derived classes (``names``) are classified, not unclassified."""
    path = write_geojson(
        tmp_path,
        [qupath_04(poly(0, 0, 40), TUMOR_POS), qupath_04(poly(50, 50, 40), STROMA_NEG)],
    )
    mask = read_truth(path, (100, 100)).mask
    assert mask[:40, :40].all() and mask.sum() == 1600  # the tumour square only
    stroma = read_truth(path, (100, 100), truth_class="Stroma").mask
    assert stroma[50:90, 50:90].all() and stroma.sum() == 1600
    full = read_truth(path, (100, 100), truth_class="Tumor: Positive").mask
    assert (full == mask).all()


def test_a_non_tumour_class_is_never_read_as_tumour(tmp_path):
    """Finding 3: a file with only Stroma: Negative is refused, listing the classes found."""
    path = write_geojson(tmp_path, [qupath_04(poly(0, 0, 40), STROMA_NEG)])
    with pytest.raises(FormatError) as info:
        read_truth(path, (100, 100))
    msg = str(info.value)
    assert "\n" not in msg and "Stroma: Negative (1)" in msg and "--truth-class" in msg


def test_errors_list_the_classes_found(tmp_path):
    path = write_geojson(
        tmp_path,
        [
            qupath_04(poly(0, 0, 40), {"names": ["Immune cells", "Positive"], "color": [1, 2, 3]}),
            qupath_04(poly(50, 50, 40), {"name": "Stroma", "color": [1, 2, 3]}),
        ],
    )
    with pytest.raises(FormatError, match=r"Immune cells: Positive \(1\), Stroma \(1\)"):
        read_truth(path, (100, 100))
    with pytest.raises(FormatError, match=r"no annotation of class 'Necrosis'.*Stroma \(1\)"):
        read_truth(path, (100, 100), truth_class="Necrosis")


@pytest.mark.parametrize(
    "cls",
    [
        "Tumor: Positive",
        "Tumor",
        {"name": "Tumor: Positive", "color": [200, 0, 0]},
        {"name": "tumour", "colorRGB": -3670016},
    ],
)
def test_every_classification_form_qupath_writes(tmp_path, cls):
    """Finding 3: a string classification, ``"A: B"`` and ``name`` forms are all read."""
    path = write_geojson(
        tmp_path, [qupath_04(poly(0, 0, 40), cls), qupath_04(poly(50, 50, 40), "Stroma")]
    )
    mask = read_truth(path, (100, 100)).mask
    assert mask[:40, :40].all() and mask.sum() == 1600


def test_geometry_collection_and_multipolygon_with_holes(tmp_path):
    """Finding 3: a GeometryCollection (QuPath writes one for mixed ROIs) is read."""
    gc = {
        "type": "GeometryCollection",
        "geometries": [
            poly(0, 0, 30),
            {"type": "LineString", "coordinates": [[0, 0], [99, 99]]},
            {
                "type": "MultiPolygon",
                "coordinates": [
                    [
                        [[40, 40, 0], [90, 40, 0], [90, 90, 0], [40, 90, 0], [40, 40, 0]],
                        [[60, 60], [70, 60], [70, 70], [60, 70], [60, 60]],
                    ]
                ],
            },
        ],
    }
    path = write_geojson(tmp_path, [qupath_04(gc, TUMOR_POS)])
    mask = read_truth(path, (100, 100)).mask
    assert mask.sum() == 900 + 2500 - 100
    assert not mask[65, 65] and mask[45, 45] and mask[15, 15]


def test_detections_and_cells_are_not_truth_by_default(tmp_path):
    """Finding 4: Tumor-classified cells and detections are left out unless asked for."""
    tumor = {"name": "Tumor", "color": [200, 0, 0]}
    cell = qupath_04(poly(60, 60, 10), tumor, "cell")
    cell["nucleusGeometry"] = poly(62, 62, 4)
    feats = [
        qupath_04(poly(0, 0, 40), tumor),
        cell,
        qupath_04(poly(80, 0, 10), tumor, "detection"),
    ]
    path = write_geojson(tmp_path, feats)
    assert read_truth(path, (100, 100)).mask.sum() == 1600
    both = read_truth(path, (100, 100), objects="annotation,detection").mask
    assert both.sum() == 1600 + 100 + 100
    only_cells = read_truth(path, (100, 100), objects="cell").mask
    assert only_cells.sum() == 100


def test_wsinfer_tiles_are_refused_as_truth(tmp_path):
    """Finding 4: a WSInfer tile GeoJSON passed as --truth is refused in one line."""
    _, gj_path, _ = write_wsinfer(tmp_path, 300, 300, 100, 0.0)
    with pytest.raises(FormatError) as info:
        read_truth(gj_path, (300, 300))
    msg = str(info.value)
    assert "\n" not in msg and "tile (9)" in msg and "low-resolution labels" in msg


def test_qupath_02_and_03_layouts(tmp_path):
    """QuPath 0.2 (type in ``id``, ``colorRGB``, measurements as a list) and 0.3
    (``object_type``): annotations read, detections not."""
    v02 = [
        {
            "type": "Feature",
            "id": "PathAnnotationObject",
            "geometry": poly(0, 0, 40),
            "properties": {
                "classification": {"name": "Tumor", "colorRGB": -3670016},
                "isLocked": False,
                "measurements": [],
            },
        },
        {
            "type": "Feature",
            "id": "PathDetectionObject",
            "geometry": poly(50, 50, 40),
            "properties": {
                "classification": {"name": "Tumor", "colorRGB": -3670016},
                "measurements": [{"name": "Area", "value": 1600.0}],
            },
        },
    ]
    v03 = [
        {
            "type": "Feature",
            "id": "PathAnnotationObject",
            "geometry": poly(0, 0, 40),
            "properties": {
                "object_type": "annotation",
                "classification": {"name": "Tumor", "colorRGB": -3670016},
                "isLocked": False,
            },
        },
        {
            "type": "Feature",
            "id": "PathCellObject",
            "geometry": poly(50, 50, 40),
            "properties": {
                "object_type": "cell",
                "classification": {"name": "Tumor", "colorRGB": -3670016},
            },
        },
    ]
    for i, feats in enumerate((v02, v03)):
        mask = read_truth(write_geojson(tmp_path, feats, f"v{i}.geojson"), (100, 100)).mask
        assert mask.sum() == 1600 and mask[:40, :40].all()


def test_the_truth_class_reaches_the_command_line(tmp_path, capsys):
    import tifffile

    slide = tmp_path / "s.tif"
    tifffile.imwrite(slide, np.full((100, 100, 3), 180, np.uint8), photometric="rgb")
    path = write_geojson(tmp_path, [qupath_04(poly(0, 0, 40), STROMA_NEG)])
    labels = tmp_path / "l.csv"
    labels.write_text("x,y,width,height,probability\n0,0,50,50,0.9\n50,0,50,50,0.1\n")
    base = ["evaluate", "--truth", str(path), "--slide", str(slide), "--labels", str(labels)]
    assert main(base) == 2
    assert "Stroma: Negative (1)" in capsys.readouterr().err
    assert main([*base, "--truth-class", "Stroma"]) == 0


# -- masks -------------------------------------------------------------------------------------


def blob_mask(size: int = 256) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return (np.hypot(yy - 100, xx - 120) < 60) | ((xx > 180) & (yy > 170))


def test_jpeg_mask_noise_is_not_cancer(tmp_path):
    """Finding 5: a JPEG mask is cut at > 127, so its noise is not read as cancer."""
    truth = blob_mask()
    Image.fromarray((truth * 255).astype(np.uint8)).save(tmp_path / "m.jpg", quality=75)
    noisy = np.asarray(Image.open(tmp_path / "m.jpg"))
    assert ((noisy > 0) & ~truth).sum() > 100  # the file really holds noise
    mask = read_truth(tmp_path / "m.jpg", (256, 256)).mask
    assert abs(mask.mean() - truth.mean()) < 0.002
    assert (mask ^ truth).mean() < 0.002
    # OCDC-style red masks (tumour in channel 0) too
    red = np.zeros((256, 256, 3), np.uint8)
    red[truth] = (255, 0, 0)
    Image.fromarray(red).save(tmp_path / "r.jpg", quality=75)
    assert (read_truth(tmp_path / "r.jpg", (256, 256)).mask ^ truth).mean() < 0.002


def test_mask_threshold_rule_and_option(tmp_path):
    truth = blob_mask()
    Image.fromarray(truth.astype(np.uint8)).save(tmp_path / "labels01.png")  # 0/1 labels
    assert (read_truth(tmp_path / "labels01.png", (256, 256)).mask == truth).all()
    three = truth.astype(np.uint8) * 2  # labels 0 and 2: refused, never read as empty
    Image.fromarray(three).save(tmp_path / "labels02.png")
    with pytest.raises(FormatError, match="--mask-threshold 0"):
        read_truth(tmp_path / "labels02.png", (256, 256))
    mask = read_truth(tmp_path / "labels02.png", (256, 256), mask_threshold=0).mask
    assert (mask == truth).all()
    grey = (truth * 100).astype(np.uint8)  # a cut of one's own
    Image.fromarray(grey).save(tmp_path / "grey.png")
    assert (read_truth(tmp_path / "grey.png", (256, 256), mask_threshold=50).mask == truth).all()


# -- export ------------------------------------------------------------------------------------


def holey_prediction(tmp_path: Path) -> tuple[Path, np.ndarray]:
    prob = np.full((100, 100), 10, np.uint8)
    prob[10:90, 10:90] = 230
    for r, c in [(20, 20), (30, 50), (60, 70)]:  # one-pixel holes
        prob[r, c] = 10
    prob[40:50, 20:30] = 10  # a 10 x 10 px hole (400 um² at 2 um/px)
    meta = {"slide": "s.tiff", "downsample": 4, "mpp": 2.0, "model": "m/lsr.pt", "loss": "intra"}
    path = tmp_path / "p.tiff"
    write_prediction(path, prob, meta)
    return path, prob


def holes_of(path: Path) -> list[float]:
    out = []
    for f in json.loads(path.read_text())["features"]:
        g = shape(f["geometry"])
        for p in getattr(g, "geoms", [g]):
            out.extend(shapely.Polygon(r).area for r in p.interiors)
    return out


def test_export_fills_small_holes(tmp_path):
    """Finding 6: one-pixel holes go by default; --min-hole-um2 and --min-area-um2 remove
    holes below them."""
    pred, _ = holey_prediction(tmp_path)
    out = tmp_path / "r.geojson"
    info = export_geojson(pred, out)
    assert holes_of(out) == [pytest.approx(1600.0)] and info["holes"] == 1
    export_geojson(pred, out, min_hole_um2=0)
    assert len(holes_of(out)) == 4
    export_geojson(pred, out, min_hole_um2=500.0)
    assert holes_of(out) == []
    export_geojson(pred, out, min_area_um2=500.0)
    assert holes_of(out) == []


def test_export_puts_numbers_in_qupath_measurements(tmp_path):
    """Finding 6: threshold and areas are QuPath measurements (numbers only: QuPath reads a
    dict of numbers), the model and loss are in the name and metadata."""
    pred, _ = holey_prediction(tmp_path)
    out = tmp_path / "r.geojson"
    export_geojson(pred, out, threshold=0.5)
    (f,) = json.loads(out.read_text())["features"]
    m = f["properties"]["measurements"]
    assert isinstance(m, dict) and all(isinstance(v, (int, float)) for v in m.values())
    assert m["LSR threshold"] == 0.5
    area_px = shape(f["geometry"]).area
    assert m["LSR area px^2"] == pytest.approx(area_px)
    assert m["LSR area um^2"] == pytest.approx(area_px * 0.25)  # 0.5 um per level-0 px
    assert "lsr" in f["properties"]["name"] and "intra" in f["properties"]["name"]
    assert f["properties"]["metadata"]["loss"] == "intra"


def test_smoothing_removes_the_staircase_and_keeps_the_round_trip(tmp_path):
    """Finding 6: --smooth leaves few axis-aligned edges and keeps the round trip (export,
    read back as truth) within 0.01 masked DICE."""
    rng = np.random.default_rng(0)
    field = ndimage.gaussian_filter(rng.random((150, 200)), 6)
    prob = (np.clip((field - field.mean()) / field.std() * 0.3 + 0.5, 0, 1) * 255).astype(np.uint8)
    meta = {"slide": "s.tiff", "downsample": 4, "mpp": 2.0, "model": "m.pt", "loss": "intra"}
    write_prediction(tmp_path / "p.tiff", prob, meta)
    pred = resample_to_grid(prob, 4, (600, 800), 1) >= 128
    scores = {}
    for smooth in (False, True):
        out = tmp_path / f"s{smooth}.geojson"
        export_geojson(tmp_path / "p.tiff", out, smooth=smooth)
        feats = json.loads(out.read_text())["features"]
        edges = aligned = 0
        for f in feats:
            g = shape(f["geometry"])
            assert shapely.is_valid(g)
            for p in getattr(g, "geoms", [g]):
                xy = np.asarray(p.exterior.coords)
                d = np.diff(xy, axis=0)
                edges += len(d)
                aligned += int(((np.abs(d[:, 0]) < 1e-9) | (np.abs(d[:, 1]) < 1e-9)).sum())
        back = read_truth(out, (800, 600)).mask
        scores[smooth] = (aligned / edges, masked_scores(back, pred, 64)["masked_dice"])
    assert scores[False][0] > 0.8, scores  # pixel edges: (almost) all axis-aligned
    assert scores[True][0] < 0.2, scores  # the staircase is gone
    assert scores[True][1] >= 0.99 and scores[False][1] - scores[True][1] <= 0.01
    # a blocky region keeps its shape: only its corners are cut, by a quarter pixel
    block = np.full((150, 200), 10, np.uint8)
    block[20:80, 30:110] = 230
    write_prediction(tmp_path / "b.tiff", block, meta)
    export_geojson(tmp_path / "b.tiff", tmp_path / "b.geojson", smooth=True)
    back = read_truth(tmp_path / "b.geojson", (800, 600)).mask
    want = resample_to_grid(block, 4, (600, 800), 1) >= 128
    assert (back ^ want).sum() <= 4 * 4  # 4 corners, a few level-0 px each


# -- README ------------------------------------------------------------------------------------


def test_readme_wsinfer_section_works_offline():
    """Finding 7: the README runs WSInfer 0.6.1 with a local model (no hub), pins what it
    needs, uses at least one worker and says that slides need their microns per pixel."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    joined = text.replace("\\\n", " ")  # shell continuation lines
    runs = [line for line in joined.splitlines() if "wsinfer run" in line and "--" in line]
    assert runs
    for run in runs:
        assert "--model-path" in run and "--config" in run and "--model " not in run
        workers = re.search(r"--num-workers\s+(\d+)", run)
        assert workers and int(workers.group(1)) >= 1
        assert "--patch-overlap-ratio" in run or "overlap" in text
    assert "wsinfer==0.6.1" in text and "zarr<3" in text and "tiffslide<3" in text
    assert "HF_HUB_OFFLINE" in text
    assert re.search(r"microns per pixel|mpp", text[text.index("wsinfer run") - 3000 :])


def test_wsinfer_overlap_and_edge_patches_train_predict_export(tmp_path, capsys):
    """The whole way with WSInfer's overlapping and edge-crossing patches: train (a few
    steps), predict, export."""
    import tifffile

    from napari_lsr.io.formats import PAPER_PRIOR_FILE, resource_path

    rng = np.random.default_rng(0)
    rgb = np.empty((640, 640, 3), np.uint8)
    rgb[:] = (200, 120, 170)
    rgb[:, :320] = (150, 60, 160)
    rgb = np.clip(rgb + rng.integers(-20, 20, rgb.shape), 0, 255).astype(np.uint8)
    slide = tmp_path / "S1.tif"
    tifffile.imwrite(slide, rgb, photometric="rgb", resolution=(2e4, 2e4), resolutionunit=3)
    csv_path, _, _ = write_wsinfer(tmp_path, 640, 640, 100, 0.5)
    model = tmp_path / "models" / "lsr.pt"
    pred = tmp_path / "pred.tiff"
    regions = tmp_path / "regions.geojson"
    train = ["train", "--slide", str(slide), "--labels", str(csv_path), "--class", "Tumor"]
    train += ["--prior", str(resource_path(PAPER_PRIOR_FILE)), "--loss", "intra", "--mpp", "2"]
    train += ["--steps", "3", "--depth", "2", "--width", "4", "--device", "cpu"]
    assert main([*train, "--out", str(model)]) == 0, capsys.readouterr().err
    assert "144 tissue blocks" in capsys.readouterr().err  # every overlapping patch a block
    predict = ["predict", "--model", str(model), "--slide", str(slide), "--out", str(pred)]
    assert main([*predict, "--device", "cpu"]) == 0, capsys.readouterr().err
    export = ["export", "--pred", str(pred), "--geojson", str(regions), "--threshold", "0.01"]
    assert main([*export, "--smooth"]) == 0, capsys.readouterr().err
    assert json.loads(regions.read_text())["type"] == "FeatureCollection"
