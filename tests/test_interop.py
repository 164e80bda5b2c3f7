"""Other tools' files: WSInfer and mapped CSVs in, QuPath GeoJSON and the estimate audit out."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import shapely
from PIL import Image
from scipy import ndimage
from shapely.geometry import shape

from napari_lsr.cli import main
from napari_lsr.elicit.review import SlideSet, load_blocks
from napari_lsr.evaluate.evaluation import evaluate_files, resample_to_grid
from napari_lsr.io.formats import FormatError, read_lowres_csv, read_truth, write_prediction
from napari_lsr.io.interop import (
    NATIVE,
    WSINFER_CSV,
    WSINFER_GEOJSON,
    default_class,
    detect_lowres_format,
    estimate_history,
    export_geojson,
    lowres_classes,
    mask_polygons,
    parse_columns,
    read_lowres,
)

SLIDE = (300, 300)
# Three 100 px patches of one row: (x, y, tumour probability, other probability).
PATCHES = [(0, 0, 0.1, 0.9), (100, 0, 0.8, 0.2), (0, 100, 0.55, 0.45)]
MAPPING = "x=Left,y=Top,width=Size_W,height=Size_H,probability=Cancer score"


def native_text(rows) -> str:
    lines = ["x,y,width,height,probability"]
    lines += [f"{x},{y},{w},{h},{p}" for x, y, w, h, p, _ in rows]
    return "\n".join(lines) + "\n"


def wsinfer_csv_text(rows) -> str:
    lines = ["minx,miny,width,height,prob_notumor,prob_Tumor"]
    lines += [f"{x},{y},{w},{h},{q},{p}" for x, y, w, h, p, q in rows]
    return "\n".join(lines) + "\n"


def mapped_text(rows) -> str:
    lines = ["Left,Top,Size_W,Size_H,Cancer score,Slide"]
    lines += [f"{x},{y},{w},{h},{p},s1" for x, y, w, h, p, _ in rows]
    return "\n".join(lines) + "\n"


def wsinfer_geojson_text(rows, as_list: bool = False) -> str:
    feats = []
    for x, y, w, h, p, q in rows:
        ring = [[x + w, y], [x + w, y + h], [x, y + h], [x, y], [x + w, y]]
        meas = {"prob_notumor": q, "prob_Tumor": p}
        if as_list:
            meas = [{"name": k, "value": v} for k, v in meas.items()]
        feats.append(
            {
                "type": "Feature",
                "id": "x",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {"isLocked": True, "measurements": meas, "objectType": "tile"},
            }
        )
    return json.dumps({"type": "FeatureCollection", "features": feats})


FORMATS = {
    "native": ("l.csv", native_text, {}),
    "wsinfer-csv": ("wsinfer.csv", wsinfer_csv_text, {}),
    "wsinfer-geojson": ("wsinfer.geojson", wsinfer_geojson_text, {}),
    "wsinfer-geojson-list": (
        "old.geojson",
        lambda rows: wsinfer_geojson_text(rows, as_list=True),
        {},
    ),
    "mapped": ("scores.csv", mapped_text, {"columns": MAPPING}),
}
# The column (or GeoJSON property) each format's messages name for x and the probability.
X_COLUMN = {
    "native": "x",
    "wsinfer-csv": "minx",
    "wsinfer-geojson": "geometry",
    "wsinfer-geojson-list": "geometry",
    "mapped": "Left",
}
P_COLUMN = {
    "native": "probability",
    "wsinfer-csv": "prob_Tumor",
    "wsinfer-geojson": "prob_Tumor",
    "wsinfer-geojson-list": "prob_Tumor",
    "mapped": "Cancer score",
}


def rows_of(patches, size: int = 100):
    return [(x, y, size, size, p, q) for x, y, p, q in patches]


def write_format(tmp_path, fmt: str, rows):
    name, text, kwargs = FORMATS[fmt]
    path = tmp_path / name
    path.write_text(text(rows))
    return path, kwargs


# -- reading -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_format_reads_the_same_labels(tmp_path, fmt):
    path, kwargs = write_format(tmp_path, fmt, rows_of(PATCHES))
    lab = read_lowres(path, SLIDE, **kwargs)
    assert lab.boxes().tolist() == [[0, 0, 100, 100], [100, 0, 100, 100], [0, 100, 100, 100]]
    assert np.allclose(lab.probability, [0.1, 0.8, 0.55])  # the Tumor class, not notumor
    assert lab.bin.tolist() == [0, 7, 4]


def test_format_detection(tmp_path):
    assert detect_lowres_format(write_format(tmp_path, "native", rows_of(PATCHES))[0]) == NATIVE
    p = write_format(tmp_path, "wsinfer-csv", rows_of(PATCHES))[0]
    assert detect_lowres_format(p) == WSINFER_CSV
    assert lowres_classes(p) == ["notumor", "Tumor"]
    g = write_format(tmp_path, "wsinfer-geojson", rows_of(PATCHES))[0]
    assert detect_lowres_format(g) == WSINFER_GEOJSON
    assert lowres_classes(g) == ["notumor", "Tumor"]
    m = write_format(tmp_path, "mapped", rows_of(PATCHES))[0]
    with pytest.raises(FormatError, match="--columns") as info:
        read_lowres(m, SLIDE)
    assert str(m) in str(info.value) and "\n" not in str(info.value)


def test_class_choice(tmp_path):
    p = write_format(tmp_path, "wsinfer-csv", rows_of(PATCHES))[0]
    other = read_lowres(p, SLIDE, class_name="notumor")
    assert np.allclose(other.probability, [0.9, 0.2, 0.45])
    assert np.allclose(read_lowres(p, SLIDE, class_name="prob_TUMOR").probability[1], 0.8)
    with pytest.raises(FormatError, match="no class 'Stroma'.*notumor, Tumor"):
        read_lowres(p, SLIDE, class_name="Stroma")


@pytest.mark.parametrize(
    ("classes", "default"),
    [
        (["notumor", "tumor"], "tumor"),
        (["Normal", "Tumour"], "Tumour"),
        (["benign", "cancer_cells"], "cancer_cells"),
        (["non_tumor", "Tumor_region"], "Tumor_region"),
        (["lymph"], "lymph"),
        (["a", "b"], None),
    ],
)
def test_default_class(classes, default):
    assert default_class(classes) == default


def test_no_tumour_class_asks_for_one(tmp_path):
    p = tmp_path / "w.csv"
    p.write_text("minx,miny,width,height,prob_a,prob_b\n0,0,10,10,0.1,0.9\n")
    with pytest.raises(FormatError, match="choose one with --class.*a, b"):
        read_lowres(p)


def test_parse_columns():
    assert parse_columns(MAPPING)["probability"] == "Cancer score"
    with pytest.raises(ValueError, match="no column given for height"):
        parse_columns("x=a,y=b,width=c,probability=d")
    with pytest.raises(ValueError, match="unknown field"):
        parse_columns("x=a,y=b,width=c,height=d,probability=e,colour=f")
    with pytest.raises(ValueError, match="not FIELD=COLUMN"):
        parse_columns("x")


# -- bad input: one line naming the file, the row and the column, in every format ---------------

BAD = {
    # name: (patches as (x, y, w, p), row, which column, words)
    "probability": ([(0, 0, 100, 0.5), (100, 0, 100, 1.5)], 2, "p", "outside [0, 1]"),
    "overlap": ([(0, 0, 100, 0.5), (100, 0, 100, 0.2), (0, 0, 100, 0.3)], 3, "x", "overlaps row 1"),
    "off grid": ([(0, 0, 100, 0.5), (150, 0, 100, 0.2)], 2, "x", "off the patch grid"),
    # a patch past the edge is clipped (WSInfer's edge patches); one centred outside is refused
    "outside": ([(0, 0, 100, 0.5), (300, 0, 100, 0.2)], 2, "x", "centre outside the slide"),
}


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_names_file_row_column(tmp_path, fmt, case):
    patches, row, which, words = BAD[case]
    rows = [(x, y, w, w, p, 1 - p) for x, y, w, p in patches]
    path, kwargs = write_format(tmp_path, fmt, rows)
    with pytest.raises(FormatError) as info:
        read_lowres(path, SLIDE, **kwargs)
    err = info.value
    msg = str(err)
    assert "\n" not in msg and str(path) in msg and words in msg, msg
    assert err.row == row
    if which == "p":
        assert err.column == P_COLUMN[fmt]
    elif which == "x":
        assert err.column == X_COLUMN[fmt]
    else:
        width = {"native": "width", "wsinfer-csv": "width", "mapped": "Size_W"}
        assert err.column == width.get(fmt, "geometry")
    where = "feature" if "geojson" in fmt else "row"
    assert f"{where} {row}" in msg


@pytest.mark.parametrize(
    ("fmt", "drop", "column"),
    [("native", "probability", "probability"), ("wsinfer-csv", "minx", "minx")],
)
def test_missing_column(tmp_path, fmt, drop, column):
    path, _ = write_format(tmp_path, fmt, rows_of(PATCHES))
    lines = path.read_text().splitlines()
    k = lines[0].split(",").index(drop)
    path.write_text(
        "\n".join(",".join(c for i, c in enumerate(ln.split(",")) if i != k) for ln in lines)
    )
    with pytest.raises(FormatError) as info:
        read_lowres(path, SLIDE, columns=None)
    # a WSInfer CSV without minx is no longer recognisable: the message says what is expected
    assert str(path) in str(info.value) and column in str(info.value)


def test_mapped_missing_column_and_bad_number(tmp_path):
    path, kwargs = write_format(tmp_path, "mapped", rows_of(PATCHES))
    with pytest.raises(FormatError, match="missing column") as info:
        read_lowres(path, SLIDE, columns=MAPPING.replace("Top", "Upper"))
    assert info.value.column == "upper"
    path.write_text(path.read_text().replace("0.8,", "high,"))
    with pytest.raises(FormatError, match="not a number") as info:
        read_lowres(path, SLIDE, **kwargs)
    assert (info.value.row, info.value.column) == (2, "Cancer score")


def test_geojson_feature_problems(tmp_path):
    path = tmp_path / "w.geojson"
    data = json.loads(wsinfer_geojson_text(rows_of(PATCHES)))
    del data["features"][1]["properties"]["measurements"]["prob_Tumor"]
    data["features"][1]["properties"]["measurements"]["prob_Tumor"] = None
    path.write_text(json.dumps(data))
    with pytest.raises(FormatError, match="feature 2, property 'prob_Tumor': no measurement"):
        read_lowres(path, SLIDE)
    data = json.loads(wsinfer_geojson_text(rows_of(PATCHES)))
    data["features"][2]["geometry"]["coordinates"][0][1] = [150, 160]
    path.write_text(json.dumps(data))
    with pytest.raises(FormatError, match="feature 3, property 'geometry': .*not an axis-aligned"):
        read_lowres(path, SLIDE)


def test_native_reader_and_dispatcher_agree(tmp_path):
    path, _ = write_format(tmp_path, "native", rows_of(PATCHES))
    a, b = read_lowres_csv(path, SLIDE), read_lowres(path, SLIDE)
    assert np.array_equal(a.boxes(), b.boxes()) and np.array_equal(a.bin, b.bin)


# -- GeoJSON out ---------------------------------------------------------------------------------


def ring_prediction(tmp_path, downsample: int = 4, size: int = 400, mpp0: float = 0.5):
    """A prediction with a ring (a region with a hole), a blob and a one-pixel speck."""
    h = w = size // downsample
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot(yy - h * 0.35, xx - w * 0.4)
    prob = np.where((r > 8) & (r < 25), 230, 20).astype(np.uint8)
    prob[h - 20 : h - 8, w - 30 : w - 10] = 200
    prob[2, w - 3] = 255
    meta = {
        "slide": str(tmp_path / "slide.tiff"),
        "slide_width": size,
        "slide_height": size,
        "downsample": downsample,
        "mpp": mpp0 * downsample,
        "model": str(tmp_path / "models" / "intra+inter.pt"),
        "loss": "intra+inter",
    }
    path = tmp_path / "pred.tiff"
    write_prediction(path, prob, meta)
    return path, prob, meta


def test_geojson_export_is_valid_qupath(tmp_path):
    pred, prob, meta = ring_prediction(tmp_path)
    out = tmp_path / "regions.geojson"
    info = export_geojson(pred, out, threshold=0.5)
    data = json.loads(out.read_text())
    assert data["type"] == "FeatureCollection" and info["features"] == len(data["features"]) == 3
    holes = 0
    for f in data["features"]:
        geom = shape(f["geometry"])
        assert f["geometry"]["type"] in ("Polygon", "MultiPolygon")
        assert shapely.is_valid(geom), shapely.is_valid_reason(geom)
        props = f["properties"]
        assert props["objectType"] == "annotation"
        assert props["classification"]["name"] == "Tumor"
        assert len(props["classification"]["color"]) == 3
        assert props["model"] == "intra+inter" and props["loss"] == "intra+inter"
        assert props["threshold"] == 0.5
        minx, miny, maxx, maxy = geom.bounds  # level-0 px, inside the slide
        assert 0 <= minx < maxx <= 400 and 0 <= miny < maxy <= 400
        holes += sum(len(p.interiors) for p in getattr(geom, "geoms", [geom]))
    assert holes == 1  # the ring keeps its hole
    # a minimum area drops the one-pixel speck (4x4 level-0 px at 0.5 um = 4 um²)
    assert export_geojson(pred, out, min_area_um2=10.0)["features"] == 2
    # a coarser simplification keeps validity with fewer vertices
    fine = sum(len(shapely.get_coordinates(shape(f["geometry"]))) for f in data["features"])
    export_geojson(pred, out, simplify_um=4.0)
    coarse = json.loads(out.read_text())["features"]
    assert all(shapely.is_valid(shape(f["geometry"])) for f in coarse)
    assert sum(len(shapely.get_coordinates(shape(f["geometry"]))) for f in coarse) < fine
    # a higher threshold leaves only the strongest regions
    assert export_geojson(pred, out, threshold=0.85)["features"] == 2


def test_mask_polygons_valid_on_noise():
    rng = np.random.default_rng(3)
    mask = ndimage.gaussian_filter(rng.random((120, 150)), 2) > 0.5  # many touching corners
    polys = mask_polygons(mask, 2.5)
    assert polys and all(shapely.is_valid(p) for p in polys)
    assert np.isclose(sum(p.area for p in polys), mask.sum() * 2.5**2)


def boundary_distance(mask: np.ndarray) -> np.ndarray:
    """Distance of each pixel to the other side of the mask's boundary (in pixels)."""
    return np.where(
        mask, ndimage.distance_transform_edt(mask), ndimage.distance_transform_edt(~mask)
    )


@pytest.mark.parametrize("simplify_um", [None, 0.0])
def test_round_trip_through_the_truth_reader(tmp_path, simplify_um):
    rng = np.random.default_rng(0)
    smooth = ndimage.gaussian_filter(rng.random((150, 200)), 5)
    prob = (np.clip((smooth - smooth.mean()) / smooth.std() * 0.3 + 0.5, 0, 1) * 255).astype(
        np.uint8
    )
    meta = {"slide": "s.tiff", "downsample": 4, "mpp": 2.0, "model": "m.pt", "loss": "intra"}
    write_prediction(tmp_path / "p.tiff", prob, meta)
    out = tmp_path / "p.geojson"
    export_geojson(tmp_path / "p.tiff", out, simplify_um=simplify_um)
    truth = read_truth(out, (800, 600))
    assert truth.downsample == 1
    pred = resample_to_grid(prob, 4, truth.mask.shape, truth.downsample) >= 128
    differ = pred ^ truth.mask
    assert pred.sum() > 0.2 * pred.size
    # the same mask, except within one output pixel (4 truth px) of a boundary
    assert boundary_distance(pred)[differ].max(initial=0) <= 4
    assert differ.mean() < 0.05
    if simplify_um == 0.0:  # pixel-exact outlines come back pixel for pixel
        assert not differ.any()


def test_cli_export_then_evaluate_against_it(project_copy, tmp_path, capsys):
    entry = project_copy.slides[0]
    truth = np.asarray(Image.open(entry.truth)) > 0  # the sample's truth at 1/4
    with entry.open() as slide:
        sw, sh = slide.dimensions
        mpp = slide.mpp
    meta = {
        "slide": str(entry.path),
        "slide_width": sw,
        "slide_height": sh,
        "downsample": 4,
        "mpp": mpp * 4,
        "model": "truth.pt",
        "loss": "none",
    }
    pred = tmp_path / "pred.tiff"
    write_prediction(pred, np.where(truth, 255, 0).astype(np.uint8), meta)
    out = tmp_path / "exported.geojson"
    assert main(["export", "--pred", str(pred), "--geojson", str(out), "--min-area-um2", "0"]) == 0
    assert "tumour region" in capsys.readouterr().out
    argv = ["evaluate", "--truth", str(out), "--slide", str(entry.path), "--pred", str(pred)]
    assert main([*argv, "--band-px", "64", "--json", str(tmp_path / "s.json")]) == 0
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["unmasked_iou"] > 0.97


def test_cli_export_needs_something(capsys, tmp_path):
    assert main(["export"]) == 2
    assert "--estimates" in capsys.readouterr().err
    assert main(["export", "--pred", str(tmp_path / "p.tiff")]) == 2
    assert "go together" in capsys.readouterr().err


def test_cli_evaluate_wsinfer_labels(project_copy, tmp_path, capsys):
    entry = project_copy.slides[0]
    lab = read_lowres(entry.labels)
    rows = zip(lab.x, lab.y, lab.width, lab.height, lab.probability)
    text = "minx,miny,width,height,prob_Benign,prob_Tumor\n" + "".join(
        f"{x},{y},{w},{h},{1 - p:.6f},{p:.6f}\n" for x, y, w, h, p in rows
    )
    ws = tmp_path / "wsinfer.csv"
    ws.write_text(text)
    base = ["evaluate", "--truth", str(entry.truth), "--slide", str(entry.path)]
    assert main([*base, "--labels", str(ws), "--json", str(tmp_path / "a.json")]) == 0
    assert main([*base, "--labels", str(entry.labels), "--json", str(tmp_path / "b.json")]) == 0
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert a["masked_iou"] == pytest.approx(b["masked_iou"])
    capsys.readouterr()
    assert main([*base, "--labels", str(ws), "--class", "Benign"]) == 0
    assert main([*base, "--labels", str(ws), "--class", "Stroma"]) == 2
    err = capsys.readouterr().err
    assert "no class 'Stroma'" in err and str(ws) in err
    r = evaluate_files(entry.truth, entry.path, labels=ws, class_name="Tumor")
    assert r["masked_iou"] == pytest.approx(b["masked_iou"])


def test_project_reads_wsinfer_labels(project_copy, tmp_path):
    from napari_lsr.io.project import Project

    entry = project_copy.slides[0]
    lab = read_lowres(entry.labels)
    feats = "".join(
        f"{x},{y},{w},{h},{p:.6f}\n"
        for x, y, w, h, p in zip(lab.x, lab.y, lab.width, lab.height, lab.probability)
    )
    other = tmp_path / "scores.csv"
    other.write_text("X0,Y0,W,H,P\n" + feats)
    entry.labels = other
    entry.labels_columns = "x=X0,y=Y0,width=W,height=H,probability=P"
    project_copy.save()
    again = Project.open(project_copy.folder).slides[0]
    assert again.labels_columns == entry.labels_columns
    assert np.array_equal(again.read_labels().boxes(), lab.boxes())


# -- estimates for audit -------------------------------------------------------------------------


def test_export_estimates(project_copy, tmp_path, capsys):
    _slides = SlideSet(project_copy)
    load_blocks(project_copy, _slides)
    _slides.close()
    store = project_copy.store
    ids = sorted(store.block_ids(1).values())[:3]
    store.add_estimate(ids[0], "ana", 40.0)
    store.add_estimate(ids[1], "ana", None, skipped=True)
    undone = store.add_estimate(ids[2], "ben", 70.0)
    store.undo_estimate(undone)
    store.add_estimate(ids[2], "ben", 75.0)
    project_copy.close()
    out = tmp_path / "estimates.csv"
    argv = ["export", "--estimates", str(out), "--project", str(project_copy.folder)]
    assert main(argv) == 0
    assert "4 estimate(s)" in capsys.readouterr().out
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["status"] for r in rows] == ["recorded", "skipped", "undone", "recorded"]
    assert [r["annotator"] for r in rows] == ["ana", "ana", "ben", "ben"]
    assert rows[0]["percent"] == "40.0" and rows[1]["percent"] == ""
    assert rows[2]["undone_time"] and not rows[3]["undone_time"]
    for r in rows:
        assert r["slide"].endswith("slide_0.tiff") and r["time"].endswith("+00:00")
        assert int(r["width"]) > 0 and r["bin_label"]
    assert len(estimate_history(project_copy.store, project_copy.bins)) == 4


def test_export_and_lowres_options_in_help(capsys):
    for cmd, words in (
        ("export", ("--geojson", "--threshold", "--min-area-um2", "--simplify-um", "--estimates")),
        ("evaluate", ("--class", "--columns")),
        ("train", ("--class", "--columns")),
    ):
        with pytest.raises(SystemExit) as info:
            main([cmd, "--help"])
        assert info.value.code == 0
        out = capsys.readouterr().out
        assert all(w in out for w in words), (cmd, out)
