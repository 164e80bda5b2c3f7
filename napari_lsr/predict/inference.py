"""Whole-slide prediction: overlapping tiles at the model's mpp, as a Dask graph, to a TIFF.

The output grid is the slide at the model's training mpp (downsample d = model mpp / slide
mpp). Each Dask task predicts one output tile of ``tile`` px on the CPU, a row of
``batch_size`` tiles in one forward pass on a GPU; each tile is read with ``margin`` px of
context on every side and only its centre is kept (centre-cropping). The U-Net has no
spatial normalisation and tiles start on its pooling grid, so with a margin at least its
reach the tiled result equals a forward pass over the whole slide: no seams. On the CPU,
``InferenceUNet.centre`` computes only the pixels the centre depends on. Tiles whose area
(with margin) holds no tissue on a thumbnail are written as 0 without running the model.
Tasks store their chunk straight into an on-disk zarr array (so memory does not grow with
the slide), which is then streamed into the pyramidal TIFF + JSON sidecar of SPEC section 2.
``scheduler`` is None (local threads), the address of a Dask distributed scheduler
(``tcp://`` or ``tls://``, TLS settings then from Dask's config), or a security file (YAML)
naming a ``tls://`` scheduler and the certificates to reach it (``scheduler_security``); its
workers must see the same slide and model paths.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..config import LSRError
from ..io.formats import write_prediction
from ..io.slide import Slide, shared_slide, tissue_mask

DEFAULT_TILE = 512
#: Thumbnail pixels per output tile side used to find background tiles.
THUMB_PER_TILE = 16

Progress = Callable[[str, float], None]

_MODEL_CACHE: dict[tuple[str, int, str], tuple[Any, dict]] = {}
_MODEL_LOCK = threading.Lock()


class InferenceError(LSRError, ValueError):
    """The model cannot be applied to this slide (one-line reason)."""


def _cached_model(path: str, device: str, trust: bool = False) -> Any:
    """Load a checkpoint once per process (Dask workers included); ``trust``: the user chose
    to open a checkpoint that is not plain data (``training.load_checkpoint``)."""
    return _cached_model_and_meta(path, device, trust)[0]


def _cached_model_and_meta(path: str, device: str, trust: bool = False) -> tuple[Any, dict]:
    """The cached network of ``_cached_model`` and its checkpoint's metadata (no weights)."""
    from ..learn.training import load_model

    try:
        key = (path, os.stat(path).st_mtime_ns, device)
    except OSError:
        return load_model(path, device, trust=trust)  # raises the loader's one-line error
    with _MODEL_LOCK:
        if key not in _MODEL_CACHE:
            import torch

            model, meta = load_model(path, device, trust=trust)
            from ..learn.unet import has_inference_form, inference_form

            if device == "cpu" and has_inference_form(model):
                # the inference-only form (folded norms, no concatenation copies, channels-last
                # throughout, only the tile centre's dependencies computed): same outputs,
                # 1.4-1.6x faster per tile on the CPU than the model as loaded (unet.py)
                model = inference_form(model)
            else:
                model = model.to(memory_format=torch.channels_last)
            _MODEL_CACHE[key] = (model, meta)
        return _MODEL_CACHE[key]


def output_geometry(slide: Slide, model_mpp: float) -> tuple[float, int, int]:
    """(downsample, out_width, out_height) of the prediction grid for a model mpp."""
    slide_mpp = slide.require_mpp("prediction at the model's resolution")
    d = model_mpp / slide_mpp
    if d < 0.9:
        raise InferenceError(
            f"{slide.path}: the model works at {model_mpp:.3g} um/px but the slide's finest "
            f"level is {slide_mpp:.3g} um/px; it cannot supply that resolution"
        )
    return d, max(1, math.ceil(slide.width / d)), max(1, math.ceil(slide.height / d))


def predict_chunk(
    model_path: str,
    slide_path: str,
    slide_mpp: float | None,
    device: str,
    downsample: float,
    y0: int,
    x0: int,
    h: int,
    w: int,
    tile: int,
    margin: int,
    active: list[bool],
    trust: bool = False,
) -> np.ndarray:
    """Predict output rows y0..y0+h, columns x0..x0+w (a row of tiles) as uint8 0..255."""
    import torch

    out = np.zeros((h, w), np.uint8)
    n_tiles = math.ceil(w / tile)
    todo = [k for k in range(n_tiles) if active[k]]
    if not todo:
        return out
    model = _cached_model(model_path, device, trust)
    slide = shared_slide(slide_path, slide_mpp)
    size = tile + 2 * margin
    cuda = device.startswith("cuda")
    # A GPU takes the chunk's tiles in one batch; on the CPU each worker thread runs one tile
    # at a time (one torch thread each: batching buys nothing there, and memory stays one
    # tile's activations per worker whatever the slide's width).
    step = len(todo) if cuda else 1
    for a in range(0, len(todo), step):
        part = todo[a : a + step]
        batch = np.empty((len(part), size, size, 3), np.uint8)
        for i, k in enumerate(part):
            ox, oy = x0 + k * tile - margin, y0 - margin
            batch[i] = slide.read_region(
                int(round(ox * downsample)),
                int(round(oy * downsample)),
                int(round(size * downsample)),
                int(round(size * downsample)),
                size=(size, size),
            )
        x = torch.from_numpy(batch).to(device).permute(0, 3, 1, 2).float().div_(255.0)
        with (
            torch.inference_mode(),
            torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=cuda),
        ):
            prob = torch.sigmoid(_centre_logits(model, x, margin, tile))
        prob = (prob * 255.0 + 0.5).to(torch.uint8)
        prob = prob.cpu().numpy()
        for i, k in enumerate(part):
            cw = min(tile, w - k * tile)
            out[:, k * tile : k * tile + cw] = prob[i, :h, :cw]
    return out


def _centre_logits(model: Any, x: Any, margin: int, tile: int) -> Any:
    """Float logits of the ``tile`` px centres of (B, 3, tile + 2 margin, ...) tiles.

    An InferenceUNet computes only the pixels the centres depend on when the margin holds the
    network's reach; otherwise the whole forward pass runs and is cropped.
    """
    from ..learn.unet import InferenceUNet

    if isinstance(model, InferenceUNet) and margin >= model.context:
        return model.centre(x, margin)
    return model(x).float()[:, margin : margin + tile, margin : margin + tile]


def tissue_tiles(
    slide: Slide, downsample: float, out_h: int, out_w: int, tile: int, margin: int
) -> np.ndarray:
    """Bool (rows, cols) of output tiles whose area with margin holds any tissue."""
    rows, cols = math.ceil(out_h / tile), math.ceil(out_w / tile)
    step = tile / THUMB_PER_TILE  # output px per thumbnail px
    tw, th = max(1, math.ceil(out_w / step)), max(1, math.ceil(out_h / step))
    thumb = slide.read_region(0, 0, slide.width, slide.height, size=(tw, th))
    tissue = tissue_mask(thumb)
    m = int(math.ceil(margin / step)) + 1
    padded = np.pad(tissue, m)
    out = np.zeros((rows, cols), bool)
    for r in range(rows):
        for c in range(cols):
            a0, b0 = r * THUMB_PER_TILE, c * THUMB_PER_TILE
            out[r, c] = padded[
                a0 : a0 + THUMB_PER_TILE + 2 * m, b0 : b0 + THUMB_PER_TILE + 2 * m
            ].any()
    return out


def predict_slide(
    model_path: str | os.PathLike,
    slide_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    device: str = "auto",
    scheduler: str | None = None,
    slide_mpp: float | None = None,
    tile: int = DEFAULT_TILE,
    margin: int | None = None,
    batch_size: int = 8,
    skip_background: bool = True,
    progress: Progress | None = None,
    workdir: str | os.PathLike | None = None,
    trust_checkpoint: bool = False,
) -> dict[str, Any]:
    """Predict a whole slide and write ``out_path`` (TIFF) and its JSON sidecar.

    The checkpoint opens with the safe loader; ``trust_checkpoint`` (the user's explicit
    choice) lets an older checkpoint that is not plain data open with the unsafe one.
    Returns a summary: width, height, mpp, downsample, tiles, skipped, seconds.
    """
    import dask
    import zarr

    from ..learn.training import select_device

    t0 = time.perf_counter()
    model_path = str(Path(model_path).resolve())
    dev = str(select_device(device))
    # loaded once: the chunks below take the network from the same per-process cache
    ckpt = _cached_model_and_meta(model_path, dev, trust_checkpoint)[1]
    model_loss = _model_loss(ckpt)
    model_mpp = float(ckpt["train_mpp"])
    with Slide(slide_path, mpp=slide_mpp) as slide:
        d, out_w, out_h = output_geometry(slide, model_mpp)
        import torch

        from ..learn.unet import build_model

        with torch.device("meta"):  # geometry only: no weights allocated or initialised
            net = build_model(ckpt["unet"])
        mult = net.multiple
        if margin is None:
            margin = int(math.ceil(net.receptive_radius / mult) * mult)
        tile = max(mult, int(math.ceil(tile / mult) * mult))
        if margin % mult:
            raise InferenceError(f"margin must be a multiple of {mult}")
        rows, cols = math.ceil(out_h / tile), math.ceil(out_w / tile)
        active = (
            tissue_tiles(slide, d, out_h, out_w, tile, margin)
            if skip_background
            else np.ones((rows, cols), bool)
        )
        slide_info = {
            "path": str(slide.path.resolve()),
            "width": slide.width,
            "height": slide.height,
            "mpp": slide.mpp,
        }
    del ckpt
    if progress:
        progress("tiles", 0.0)
    # GPU: a task is a row of batch_size tiles (one forward pass); CPU: one tile per task, so
    # the workers stay balanced (each tile is its own zarr chunk: tasks never share a chunk)
    chunk_w = tile * (max(1, batch_size) if dev.startswith("cuda") else 1)
    per_chunk = chunk_w // tile
    tmp = Path(tempfile.mkdtemp(prefix="lsr-pred-", dir=workdir))
    try:
        zpath = str(tmp / "pred.zarr")
        store = zarr.open_array(
            store=zpath,
            mode="w",
            shape=(out_h, out_w),
            chunks=(tile, chunk_w),
            dtype="uint8",
            fill_value=0,
        )
        tasks = []
        for r, ya in enumerate(range(0, out_h, tile)):
            for xa in range(0, out_w, chunk_w):
                c0 = xa // tile
                act = [bool(active[r, c]) for c in range(c0, min(c0 + per_chunk, cols))]
                if not any(act):
                    continue  # background: the zarr fill value (0) stands
                tasks.append(
                    dask.delayed(_store_chunk, pure=False)(
                        zpath,
                        model_path,
                        slide_info["path"],
                        slide_mpp,
                        dev,
                        d,
                        ya,
                        xa,
                        min(tile, out_h - ya),
                        min(chunk_w, out_w - xa),
                        tile,
                        margin,
                        act,
                        trust_checkpoint,
                    )
                )
        _run(tasks, scheduler, progress, cpu=dev == "cpu")
        meta = {
            "slide": slide_info["path"],
            "slide_width": slide_info["width"],
            "slide_height": slide_info["height"],
            "downsample": d,
            "mpp": model_mpp,
            "model": model_path,
            "loss": model_loss,
            "tile": tile,
            "margin": margin,
        }
        write_prediction(out_path, store, meta)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "width": out_w,
        "height": out_h,
        "mpp": model_mpp,
        "downsample": d,
        "tiles": int(rows * cols),
        "skipped": int((~active).sum()),
        "seconds": time.perf_counter() - t0,
    }


def _model_loss(ckpt: dict[str, Any]) -> str:
    cfg = ckpt.get("config", {})
    return f"{cfg.get('loss')}/{cfg.get('distance')}"


def _store_chunk(zpath: str, *args: Any) -> int:
    """Predict one chunk and write it into the on-disk zarr array; returns its pixel count."""
    import zarr

    out = predict_chunk(*args)
    y0, x0 = args[5], args[6]
    zarr.open_array(store=zpath, mode="r+")[y0 : y0 + out.shape[0], x0 : x0 + out.shape[1]] = out
    _release_freed_memory()
    return int(out.size)


#: Tiles between two returns of freed memory to the OS (a return costs system time).
TRIM_EVERY = 16
_TILES_DONE = [0]


def _release_freed_memory() -> None:
    """Every TRIM_EVERY tiles, hand freed memory back to the OS: glibc keeps it in per-thread
    arenas otherwise, and the high-water mark creeps up over hundreds of tiles."""
    global _MALLOC_TRIM
    _TILES_DONE[0] += 1
    if _TILES_DONE[0] % TRIM_EVERY:
        return
    if _MALLOC_TRIM is None:
        try:
            import ctypes

            _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM: Any = None


#: The largest scheduler security file read.
SECURITY_FILE_LIMIT = 1 << 20


def scheduler_security(scheduler: str) -> tuple[str, Any]:
    """The address and ``distributed.Security`` that ``--scheduler`` stands for.

    ``scheduler`` is an address (``tcp://HOST:PORT``, ``tls://HOST:PORT``; a bare HOST:PORT
    is tcp), whose TLS settings come from Dask's own config (``distributed.comm.tls.ca-file``,
    ``.client.cert``, ``.client.key`` in ~/.config/dask/*.yaml or DASK_* variables), or a
    YAML security file: either ``address`` (tls://), ``ca-file``, ``cert`` and ``key``, or a
    Dask config file (``scheduler-address`` and ``distributed: comm: tls: ...``). Paths in
    the file are relative to its folder. Bad settings raise InferenceError (one line).
    """
    from distributed.security import Security

    text = str(scheduler).strip()
    if "://" not in text and (
        Path(text).suffix.lower() in (".yaml", ".yml", ".json") or Path(text).is_file()
    ):
        return _security_file(Path(text).expanduser())
    address = text if "://" in text else f"tcp://{text}"
    scheme = address.split("://", 1)[0]
    if scheme not in ("tcp", "tls"):
        raise InferenceError(
            f"--scheduler {text}: give tcp://HOST:PORT, tls://HOST:PORT or a security file"
        )
    security = Security()  # Dask's own config (distributed.comm.tls.*)
    if scheme == "tls" and not (security.tls_ca_file and security.tls_client_cert):
        raise InferenceError(
            f"{address}: a tls:// scheduler needs certificates: give --scheduler FILE.yaml "
            "(address, ca-file, cert, key) or set distributed.comm.tls in Dask's config"
        )
    return address, security


def _security_file(path: Path) -> tuple[str, Any]:
    import yaml
    from distributed.security import Security

    try:
        with open(path, "rb") as fh:
            raw = fh.read(SECURITY_FILE_LIMIT + 1)
    except OSError as exc:
        raise InferenceError(
            f"{path}: cannot read the scheduler security file ({exc.strerror or exc})"
        ) from None
    if len(raw) > SECURITY_FILE_LIMIT:
        raise InferenceError(f"{path}: too large for a scheduler security file")
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        why = " ".join(str(exc).split())
        raise InferenceError(f"{path}: not a valid YAML security file ({why})") from None

    def norm(v: Any) -> Any:
        return (
            {str(k).replace("_", "-"): norm(x) for k, x in v.items()} if isinstance(v, dict) else v
        )

    data = norm(data)
    if not isinstance(data, dict):
        raise InferenceError(f"{path}: not a scheduler security file (expected a mapping)")
    if "distributed" in data or "scheduler-address" in data:  # Dask's own config layout

        def sub(d: dict, key: str) -> dict:
            v = d.get(key)
            return v if isinstance(v, dict) else {}

        tls = sub(sub(sub(data, "distributed"), "comm"), "tls")
        client = sub(tls, "client")
        address = data.get("scheduler-address") or data.get("address")
        entries = {
            "ca-file": tls.get("ca-file"),
            "cert": client.get("cert"),
            "key": client.get("key"),
        }
    else:
        address = data.get("address")
        entries = {k: data.get(k) for k in ("ca-file", "cert", "key")}
    if not isinstance(address, str) or not address.startswith("tls://"):
        raise InferenceError(
            f"{path}: give the scheduler's tls:// address (address: tls://HOST:PORT)"
        )
    files: dict[str, str | None] = {}
    for key, value in entries.items():
        if value is None:
            files[key] = None
            continue
        if not isinstance(value, str):
            raise InferenceError(f"{path}: {key} should be a file path")
        f = (path.parent / Path(value).expanduser()).resolve()
        if not f.is_file():
            raise InferenceError(f"{path}: {key} {f} does not exist")
        files[key] = str(f)
    if not (files["ca-file"] and files["cert"]):
        raise InferenceError(f"{path}: give ca-file (the cluster's CA) and cert (this client's)")
    security = Security(
        tls_ca_file=files["ca-file"],
        tls_client_cert=files["cert"],
        tls_client_key=files["key"],
        require_encryption=True,
    )
    return address, security


def _run(tasks: list, scheduler: str | None, progress: Progress | None, cpu: bool = True) -> None:
    """Run the chunk tasks on local threads or on a distributed cluster, with progress."""
    import dask

    n = max(1, len(tasks))
    if scheduler:
        try:
            from distributed import Client, as_completed
        except ImportError as exc:  # pragma: no cover
            raise InferenceError("dask.distributed is needed for --scheduler") from exc
        address, security = scheduler_security(scheduler)
        try:
            client = Client(address, security=security, timeout="10s", set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            msg = " ".join(str(exc).split()) or type(exc).__name__
            raise InferenceError(f"cannot reach the Dask scheduler at {address}: {msg}") from exc
        try:
            futures = client.compute(tasks)
            # set_as_default=False: as_completed must be told which event loop to use
            for done, fut in enumerate(as_completed(futures, loop=client.loop), start=1):
                fut.result()  # raise a worker's error here
                if progress:
                    progress("tiles", done / n)
        finally:
            client.close()
        return
    from dask.callbacks import Callback

    done = [0]

    def posttask(key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        if isinstance(result, int) and progress:
            done[0] += 1
            progress("tiles", min(1.0, done[0] / n))

    import torch

    # On the CPU, tiles run side by side on every core with one torch thread each: the small
    # convolutions of a tile scale poorly inside torch, but tiles are independent.
    threads = torch.get_num_threads()
    workers = os.cpu_count() or 1
    if cpu:
        torch.set_num_threads(1)
    try:
        with Callback(posttask=posttask):
            dask.compute(*tasks, scheduler="threads", num_workers=workers)
    finally:
        torch.set_num_threads(threads)
    if progress:
        progress("tiles", 1.0)


def predict_array(
    model: Any,
    rgb: np.ndarray,
    tile: int = DEFAULT_TILE,
    margin: int | None = None,
    device: str = "cpu",
    fast: bool = True,
) -> np.ndarray:
    """Tiled prediction of an in-memory RGB image (model's resolution); float32 0..1.

    The same centre-cropping as ``predict_slide``, for tests, benchmarks and small images; on
    the CPU a UNet runs in its inference form (``InferenceUNet.centre``), as there, unless
    ``fast`` is False (the model's own forward pass on every tile).
    """
    import torch

    from ..learn.unet import has_inference_form, inference_form

    mult = model.multiple
    if margin is None:
        margin = int(math.ceil(model.receptive_radius / mult) * mult)
    if tile % mult:
        raise ValueError(f"tile must be a multiple of {mult}; got {tile}")
    if fast and device == "cpu" and has_inference_form(model):
        model = inference_form(model)
    h, w = rgb.shape[:2]
    out = np.zeros((h, w), np.float32)
    pad = np.pad(rgb, ((margin, margin + tile), (margin, margin + tile), (0, 0)), mode="reflect")
    with torch.inference_mode():
        for y in range(0, h, tile):
            for x in range(0, w, tile):
                t = pad[y : y + tile + 2 * margin, x : x + tile + 2 * margin]
                xt = torch.from_numpy(np.ascontiguousarray(t)).to(device)
                xt = xt.permute(2, 0, 1)[None].float() / 255.0
                p = torch.sigmoid(_centre_logits(model, xt, margin, tile))[0]
                ch, cw = min(tile, h - y), min(tile, w - x)
                out[y : y + ch, x : x + cw] = p[:ch, :cw].cpu().numpy()
    return out
