"""File formats: round trips, and every kind of bad input refused whole with file/row/column."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from napari_lsr.io.formats import (
    Bins,
    FormatError,
    LowResLabels,
    Prior,
    paper_prior,
    rasterize_geojson,
    read_lowres_csv,
    read_prediction,
    read_prior_csv,
    read_truth,
    same_file,
    write_lowres_csv,
    write_prediction,
    write_prior_csv,
)

GOOD_LOWRES = "x,y,width,height,probability\n0,0,100,100,0.1\n100,0,100,100,0.97\n"


def write(tmp_path, name: str, text: str):
    p = tmp_path / name
    p.write_text(text)
    return p


# -- low-res labels ----------------------------------------------------------------------------


def test_lowres_round_trip_and_binning(tmp_path):
    p = write(tmp_path, "l.csv", GOOD_LOWRES + "0,100,100,100,0.2\n0,200,50,50,1.0\n")
    lab = read_lowres_csv(p, slide_size=(300, 300))
    assert lab.bin.tolist() == [0, 9, 1, 9]  # 0.2 opens bin 20-30; 1.0 is in the last bin
    out = tmp_path / "o.csv"
    write_lowres_csv(out, lab, with_bin=True)
    again = read_lowres_csv(out)
    assert np.array_equal(again.boxes(), lab.boxes())
    assert np.allclose(again.probability, lab.probability)


def test_lowres_bin_column_overrides(tmp_path):
    p = write(tmp_path, "l.csv", "x,y,width,height,probability,bin\n0,0,10,10,0.1,7\n")
    assert read_lowres_csv(p).bin.tolist() == [7]


@pytest.mark.parametrize(
    ("text", "row", "column", "words"),
    [
        ("x,y,width,probability\n0,0,1,0.5\n", None, "height", "missing column"),
        ("x,y,width,height,probability\n0,0,10,10,abc\n", 1, "probability", "not a number"),
        (
            "x,y,width,height,probability\n0,0,10,10,0.5\n0,0,10,10,1.5\n",
            2,
            "probability",
            "outside [0, 1]",
        ),
        ("x,y,width,height,probability\n0,0,0,10,0.5\n", 1, "width", "positive"),
        ("x,y,width,height,probability\n0,0,10,-3,0.5\n", 1, "height", "positive"),
        ("x,y,width,height,probability\n250,0,100,100,0.5\n", 1, "width", "outside the slide"),
        ("x,y,width,height,probability\n-5,0,10,10,0.5\n", 1, "x", "outside the slide"),
        ("x,y,width,height,probability\n0,0,10.5,10,0.5\n", 1, "width", "not an integer"),
        ("x,y,width,height,probability,bin\n0,0,10,10,0.5,12\n", 1, "bin", "not in 0..9"),
        ("", None, None, "empty file"),
        ("x,y,width,height,probability\n", None, None, "no data rows"),
    ],
)
def test_lowres_bad_input(tmp_path, text, row, column, words):
    p = write(tmp_path, "bad.csv", text)
    with pytest.raises(FormatError) as info:
        read_lowres_csv(p, slide_size=(300, 300))
    err = info.value
    msg = str(err)
    assert str(p) in msg and words in msg
    assert err.row == row and err.column == column
    if row is not None:
        assert f"row {row}" in msg and f"column {column!r}" in msg
    assert "\n" not in msg


def test_lowres_missing_file(tmp_path):
    with pytest.raises(FormatError, match="no such file"):
        read_lowres_csv(tmp_path / "nope.csv")


# -- prior -------------------------------------------------------------------------------------


def test_paper_prior_is_table1():
    p = paper_prior()
    assert p.bins.labels[0] == "0-20" and p.bins.labels[-1] == "95-100"
    assert p.mean_pct.tolist() == [0, 1, 2, 5, 6, 8, 10, 10, 20, 70]
    assert p.std_pct.tolist() == [0.1, 0.4, 0.4, 0.8, 1, 1, 1, 1, 2, 5]
    assert np.isnan(p.n).all()
    assert np.allclose(p.eta[-1], 0.70) and np.allclose(p.rho[-1], 0.05)


def test_prior_round_trip(tmp_path):
    p = Prior(Bins(((0, 50), (50, 100))), [1.5, 60.25], [0.5, 4.0], np.array([3, np.nan]))
    out = tmp_path / "prior.csv"
    write_prior_csv(out, p)
    q = read_prior_csv(out)
    assert q.bins == p.bins and np.allclose(q.mean_pct, p.mean_pct)
    assert q.n[0] == 3 and np.isnan(q.n[1])
    assert not list(tmp_path.glob(".prior.csv*")), "no temporary file left behind"
    assert q.source == ["measured", "measured"]  # not the paper's Table 1 rows


def test_prior_keeps_each_bins_source(tmp_path):
    """Issue 14: prior.csv says where each bin's value comes from; older files still read."""
    p = paper_prior()
    mean = p.mean_pct.copy()
    mean[9] = 77.75
    sources = ["paper"] * 7 + ["edited", "reviewed", "measured"]
    q = Prior(p.bins, mean, p.std_pct, np.arange(10.0), source=sources)
    write_prior_csv(tmp_path / "prior.csv", q)
    text = (tmp_path / "prior.csv").read_text()
    assert text.splitlines()[0] == "bin,p_low,p_high,mean_pct,std_pct,n,source"
    assert text.splitlines()[-1].endswith(",measured")
    assert read_prior_csv(tmp_path / "prior.csv").source == sources
    assert q.source_line() == "prior: 7 of 10 bins from the paper's Table 1, 3 from this data"
    # an older file without the column: Table 1's rows are paper, any other row measured
    old = "\n".join(",".join(line.split(",")[:6]) for line in text.splitlines()) + "\n"
    (tmp_path / "old.csv").write_text(old)
    assert read_prior_csv(tmp_path / "old.csv").source == ["paper"] * 9 + ["measured"]
    bad = text.replace(",measured", ",guessed")
    with pytest.raises(FormatError, match="guessed") as info:
        read_prior_csv(write(tmp_path, "bad.csv", bad))
    assert info.value.column == "source" and info.value.row == 10


PRIOR_HEAD = "bin,p_low,p_high,mean_pct,std_pct,n\n"


@pytest.mark.parametrize(
    ("rows", "row", "column", "words"),
    [
        ("0,0,50,101,1,\n1,50,100,5,1,\n", 1, "mean_pct", "outside [0, 100]"),
        ("0,0,50,-1,1,\n1,50,100,5,1,\n", 1, "mean_pct", "outside [0, 100]"),
        ("0,0,50,5,-0.5,\n1,50,100,5,1,\n", 1, "std_pct", "negative"),
        ("0,0,50,5,x,\n1,50,100,5,1,\n", 1, "std_pct", "not a number"),
        ("0,0,60,5,1,\n1,50,100,5,1,\n", 2, "p_low", "overlaps"),
        ("0,0,40,5,1,\n1,50,100,5,1,\n", 2, "p_low", "gap"),
        ("0,0,50,5,1,\n1,50,90,5,1,\n", 2, "p_high", "not 100"),
        ("0,10,50,5,1,\n1,50,100,5,1,\n", 1, "p_low", "gap"),
        ("0,0,50,5,1,\n3,50,100,5,1,\n", 2, "bin", "in order"),
        ("0,0,50,5,1,2.5\n1,50,100,5,1,\n", 1, "n", "non-negative integer"),
    ],
)
def test_prior_bad_input(tmp_path, rows, row, column, words):
    p = write(tmp_path, "prior.csv", PRIOR_HEAD + rows)
    with pytest.raises(FormatError) as info:
        read_prior_csv(p)
    assert info.value.row == row and info.value.column == column
    assert words in str(info.value) and str(p) in str(info.value)


def test_prior_empty_and_missing_columns(tmp_path):
    with pytest.raises(FormatError, match="empty file"):
        read_prior_csv(write(tmp_path, "e.csv", "\n"))
    with pytest.raises(FormatError, match="missing column"):
        read_prior_csv(write(tmp_path, "m.csv", "bin,p_low,p_high,mean_pct\n0,0,100,5\n"))


def test_bins_refuse_overlap_and_gap():
    with pytest.raises(FormatError, match="overlaps"):
        Bins(((0, 50), (40, 100)))
    with pytest.raises(FormatError, match="gap"):
        Bins(((0, 40), (50, 100)))
    assert Bins.from_string("0,50,100").labels == ["0-50", "50-100"]


# -- ground truth ------------------------------------------------------------------------------


def test_truth_mask_integer_downsample(tmp_path):
    m = np.zeros((25, 40), np.uint8)
    m[5:10, 5:20] = 255
    Image.fromarray(m).save(tmp_path / "t.png")
    t = read_truth(tmp_path / "t.png", slide_size=(160, 100))
    assert t.downsample == 4 and t.mask.sum() == 75


def test_truth_mask_wrong_size(tmp_path):
    Image.fromarray(np.zeros((30, 33), np.uint8)).save(tmp_path / "t.png")
    with pytest.raises(FormatError, match="divided by an integer"):
        read_truth(tmp_path / "t.png", slide_size=(160, 100))


def _geojson(tmp_path, features):
    p = tmp_path / "t.geojson"
    p.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return p


def _square(x0, y0, s, name=None, hole=None):
    rings = [[[x0, y0], [x0 + s, y0], [x0 + s, y0 + s], [x0, y0 + s], [x0, y0]]]
    if hole:
        hx, hy, hs = hole
        rings.append([[hx, hy], [hx + hs, hy], [hx + hs, hy + hs], [hx, hy + hs], [hx, hy]])
    props = {"classification": {"name": name}} if name else {}
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": rings},
        "properties": props,
    }


def test_geojson_rasterised_with_classes_and_holes(tmp_path):
    p = _geojson(
        tmp_path,
        [
            _square(0, 0, 40, "Tumor", hole=(10, 10, 10)),
            _square(60, 60, 20, "Stroma"),  # classified but not cancer: ignored
        ],
    )
    m1 = rasterize_geojson(p, (100, 100), downsample=1)
    assert m1[5, 5] and not m1[15, 15] and not m1[70, 70]
    assert abs(int(m1.sum()) - (1600 - 100)) < 120
    m2 = read_truth(p, (100, 100), downsample=2)
    assert m2.downsample == 2 and m2.mask.shape == (50, 50)


def test_geojson_unclassified_uses_all_polygons(tmp_path):
    p = _geojson(tmp_path, [_square(0, 0, 10), _square(50, 50, 10)])
    m = rasterize_geojson(p, (100, 100))
    assert m[5, 5] and m[55, 55]


def test_geojson_without_polygons(tmp_path):
    p = _geojson(
        tmp_path, [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}}]
    )
    with pytest.raises(FormatError, match="no tumour polygons"):
        read_truth(p, (100, 100))


def test_geojson_all_outside_slide(tmp_path):
    p = _geojson(tmp_path, [_square(500, 500, 10)])
    with pytest.raises(FormatError, match="outside the slide"):
        read_truth(p, (100, 100))


def test_geojson_not_json(tmp_path):
    p = tmp_path / "t.geojson"
    p.write_text("{nope")
    with pytest.raises(FormatError, match="not valid JSON"):
        read_truth(p, (100, 100))


# -- predictions -------------------------------------------------------------------------------


def test_prediction_round_trip_pyramid(tmp_path):
    import tifffile

    rng = np.random.default_rng(0)
    prob = rng.integers(0, 256, size=(600, 700), dtype=np.uint8)
    meta = {"slide": "s.tiff", "downsample": 4.0, "mpp": 4.0, "model": "m.pt", "loss": "intra"}
    out = tmp_path / "p.tiff"
    write_prediction(out, prob, meta, tile=256)
    arr, m = read_prediction(out)
    assert np.array_equal(arr, prob) and m == meta
    with tifffile.TiffFile(out) as tif:
        assert len(tif.pages) >= 2 and tif.pages[0].is_tiled
        assert tif.pages[1].shape == (300, 350)


def test_prediction_needs_metadata_and_sidecar(tmp_path):
    with pytest.raises(ValueError, match="lacks 'loss'"):
        write_prediction(
            tmp_path / "p.tiff",
            np.zeros((4, 4), np.uint8),
            {"slide": "s", "downsample": 1, "mpp": 1, "model": "m"},
        )
    (tmp_path / "q.tiff").write_bytes(b"")
    with pytest.raises(FormatError, match="no sidecar"):
        read_prediction(tmp_path / "q.tiff")


def test_labels_dataclass_boxes():
    lab = LowResLabels(
        None,
        np.array([1]),
        np.array([2]),
        np.array([3]),
        np.array([4]),
        np.array([0.5]),
        np.array([4]),
    )
    assert lab.boxes().tolist() == [[1, 2, 3, 4]]


# -- file modes ----------------------------------------------------------------------------------


@pytest.fixture
def umask_022():
    import os

    old = os.umask(0o022)
    yield
    os.umask(old)


def test_writers_keep_the_umask_mode(tmp_path, umask_022):
    """Issue 14: the temporary-file-and-rename writer kept mkstemp's 0600, so colleagues
    sharing a project folder could not read prior.csv, project.toml, models, predictions."""
    import os
    import stat

    from napari_lsr.io.formats import atomic_path, current_umask, write_json
    from napari_lsr.io.project import Project

    assert current_umask() == 0o022
    write_prior_csv(tmp_path / "prior.csv", paper_prior())
    write_json(tmp_path / "m.card.json", {"a": 1})
    meta = {"slide": "s.tiff", "downsample": 1, "mpp": 1.0, "model": "m.pt", "loss": "intra"}
    write_prediction(tmp_path / "p.tiff", np.zeros((8, 8), np.uint8), meta)
    with atomic_path(tmp_path / "m.pt") as tmp:
        tmp.write_bytes(b"weights")
    Project.create(tmp_path / "proj", [])
    written = ["prior.csv", "m.card.json", "p.tiff", "p.pred.json", "m.pt", "proj/project.toml"]
    modes = {n: oct(stat.S_IMODE(os.stat(tmp_path / n).st_mode)) for n in written}
    assert modes == {n: "0o644" for n in written}
    os.umask(0o007)  # a lab's group-shared folder
    write_prior_csv(tmp_path / "prior.csv", paper_prior())
    assert stat.S_IMODE(os.stat(tmp_path / "prior.csv").st_mode) == 0o660


def test_same_file_compares_resolved_paths(tmp_path, monkeypatch):
    """One rule for "is this sidecar's slide or model this file" (it was written twice)."""
    f = tmp_path / "a.tiff"
    f.write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    assert same_file("a.tiff", f) and same_file(str(f), "./a.tiff") and same_file(f, f)
    assert not same_file(None, f) and not same_file("", f)
    assert not same_file(tmp_path / "b.tiff", f)
