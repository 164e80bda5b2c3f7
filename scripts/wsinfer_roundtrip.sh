#!/usr/bin/env bash
# A real WSInfer 0.6.1 run fed to napari-lsr (issue #23), offline, with a local model.
# Not run by CI. Needs /work/shared/data (or DATA=...) and network access to PyPI once.
#
#   bash scripts/wsinfer_roundtrip.sh [WORK_DIR]
#
# 1. a separate venv for WSInfer (WSINFER_VENV, default ../wsinfer-venv): wsinfer==0.6.1 with
#    zarr<3 and tiffslide<3 (WSInfer 0.6.1 fails with zarr 3 / tiffslide 3);
# 2. a tiny TorchScript patch classifier (3 conv layers, random weights: the point is the
#    files, not the model) and its WSInfer config.json (classes notumor, Tumor; 100 px at
#    0.5 um/px);
# 3. an OCDC tile as a pyramidal tiled TIFF with resolution tags (0.5 um/px), whose tissue
#    reaches every edge (patches of 100 px, step 50 px: the last column and row run 10 px
#    past the 640 px tile);
# 4. wsinfer run --patch-overlap-ratio 0.5 --num-workers 1;
# 5. napari-lsr train (few steps: the point is the files), predict, export, and evaluate
#    against the tile's mask, from its CSV and from its GeoJSON.
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
WORK="$(realpath -m "${1:-$HERE/wsinfer_out}")"
DATA="${DATA:-$HERE/../shared/data}"
WSINFER_VENV="${WSINFER_VENV:-$HERE/../wsinfer-venv}"
LSR="${LSR:-napari-lsr}"
TILE="${TILE:-1009009_r27c10.jpg}"
mkdir -p "$WORK/slides"
if [ ! -x "$WSINFER_VENV/bin/wsinfer" ]; then
    python3 -m venv "$WSINFER_VENV"
    # torch first (any CPU or CUDA build with a matching torchvision), then WSInfer pinned
    "$WSINFER_VENV/bin/pip" install torch torchvision
    "$WSINFER_VENV/bin/pip" install wsinfer==0.6.1 'zarr<3' 'tiffslide<3'
fi
PY="$WSINFER_VENV/bin/python"
"$PY" - "$WORK" "$DATA/ocdc_tiles/images/$TILE" <<'PYEOF'
import json, sys
from pathlib import Path

import numpy as np
import tifffile
import torch
from PIL import Image

work, tile = Path(sys.argv[1]), Path(sys.argv[2])
torch.manual_seed(0)


rgb = np.asarray(Image.open(tile).convert("RGB"))
# a plain Sequential (TorchScript needs the source of custom classes; a heredoc has none):
# two conv layers whose "Tumor" logit rises with how dark a patch is (tumour nests in these
# H&E tiles are darker than stroma), so the probabilities spread over the bins
tiny = torch.nn.Sequential(
    torch.nn.Conv2d(3, 3, 5, padding=2), torch.nn.ReLU(),
    torch.nn.Conv2d(3, 2, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
)
with torch.no_grad():
    tiny[0].weight.zero_()
    tiny[0].bias.fill_(1.0)  # keeps the ReLU linear on inputs in [-1, 1]
    for c in range(3):
        tiny[0].weight[c, c, 2, 2] = 1.0
    tiny[2].weight.zero_()
    tiny[2].bias.zero_()
    k = 12.0
    tiny[2].weight[1, :, 0, 0] = -k / 3
    level = float(np.median((rgb / 255.0 - 0.5) / 0.5 + 1.0))  # median of the layer-1 output
    tiny[2].bias[1] = k * level
torch.jit.script(tiny.eval()).save(str(work / "model.pt"))
config = {
    "spec_version": "1.0",
    "architecture": "tiny-cnn",
    "num_classes": 2,
    "class_names": ["notumor", "Tumor"],
    "patch_size_pixels": 100,
    "spacing_um_px": 0.5,
    "transform": [
        {"name": "Resize", "arguments": {"size": 100}},
        {"name": "ToTensor"},
        {"name": "Normalize", "arguments": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}},
    ],
}
(work / "config.json").write_text(json.dumps(config, indent=2))
res = {"resolution": (1e4 / 0.5, 1e4 / 0.5), "resolutionunit": "CENTIMETER"}
with tifffile.TiffWriter(work / "slides" / f"{tile.stem}.tif") as tif:
    tif.write(rgb, tile=(256, 256), photometric="rgb", compression="jpeg", subifds=1, **res)
    half = np.asarray(Image.fromarray(rgb).resize((rgb.shape[1] // 2, rgb.shape[0] // 2)))
    tif.write(half, tile=(256, 256), photometric="rgb", compression="jpeg",
              subfiletype=1, **res)
print("slide", rgb.shape, "model and config written")
PYEOF
rm -rf "$WORK/results"
# Offline: WSInfer 0.6.1 downloads its model-zoo registry from the Hugging Face hub at start-up,
# even with --model-path. Without network, give it an empty registry and tell the hub client
# to stay offline (a registry that is already there is kept).
REG="$HOME/.wsinfer-zoo/wsinfer-zoo-registry.json"
[ -f "$REG" ] || { mkdir -p "$(dirname "$REG")"; echo '{"models": {}}' > "$REG"; }
export HF_HUB_OFFLINE=1
"$WSINFER_VENV/bin/wsinfer" --version
"$WSINFER_VENV/bin/wsinfer" run --wsi-dir "$WORK/slides" --results-dir "$WORK/results" \
    --model-path "$WORK/model.pt" --config "$WORK/config.json" \
    --num-workers 1 --patch-overlap-ratio 0.5
STEM="${TILE%.*}"
SLIDE="$WORK/slides/$STEM.tif"
CSV="$WORK/results/model-outputs-csv/$STEM.csv"
GJ="$WORK/results/model-outputs-geojson/$STEM.geojson"
head -4 "$CSV"
PRIOR="$HERE/napari_lsr/resources/prior_paper_table1.csv"
MASK="$DATA/ocdc_tiles/masks/$TILE"  # the tile's tumour mask (JPEG: cut at > 127)
STEPS="${STEPS:-40}"
for LABELS in "$CSV" "$GJ"; do
    KIND="$( [ "$LABELS" = "$CSV" ] && echo csv || echo geojson )"
    $LSR train --slide "$SLIDE" --labels "$LABELS" --class Tumor --prior "$PRIOR" \
        --loss intra --mpp 1 --steps "$STEPS" --device cpu --out "$WORK/models/lsr-$KIND.pt"
    $LSR predict --model "$WORK/models/lsr-$KIND.pt" --slide "$SLIDE" --device cpu \
        --out "$WORK/predictions/$STEM-$KIND.tiff"
    $LSR export --pred "$WORK/predictions/$STEM-$KIND.tiff" \
        --geojson "$WORK/$STEM-$KIND-tumor.geojson" --min-area-um2 50 --smooth
    $LSR evaluate --truth "$MASK" --slide "$SLIDE" --pred "$WORK/predictions/$STEM-$KIND.tiff"
    $LSR evaluate --truth "$MASK" --slide "$SLIDE" --labels "$LABELS" --class Tumor
done
echo "done: $WORK"
