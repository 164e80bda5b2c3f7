"""Block review logic (Qt-free): stratified block sampling, the review session, prefetching.

**Sampling.** For each bin z the review shows K blocks (default 12). A bin's blocks are put in
a seeded order per slide (``numpy.random.default_rng([seed, z])``, so a bin's sample does not
depend on other bins, on the order bins are visited, or on the machine) and drawn round-robin
across slides in a seeded slide order, so every slide contributes about K / n_slides blocks
while it has any left (stratified by slide, equal allocation: the prior should not reflect one
slide's staining or one patient). A drawn block is kept only when it holds tissue: it is read
as a ``TISSUE_CHECK_PX`` px thumbnail and must pass ``blocks.tissue_fraction`` with the same
threshold training uses (``blocks.TISSUE_MIN_FRACTION``). A block the annotator skips is
replaced by the next draw, so a bin still collects K estimates while it has blocks left;
undoing the skip gives the replacement back when it has not been reviewed yet.

**Session.** ``ReviewSession`` holds the current bin and block, the undo stack of estimate ids
and the per-bin progress and running mean ± std (population std, as the prior uses) of one
annotator. Every entry is committed to the project's SQLite store (its own transaction) before
the session moves on: to the bin's next block without an estimate, and when the bin is
complete, to the next bin that has one (N/P/B move freely; an entry on a block that already
has one replaces it, and undoing that brings the earlier one back). Reopening a project with
the same seed resumes: blocks this annotator already estimated count as done.

**Prefetch.** ``BlockImages`` reads a block at the resolution its preview is shown at
(``REVIEW_PX`` px on its longer side, never finer than level 0), not at the training
resolution: a 64 px training block would hide the nuclei a pathologist judges by. It reads in
a background thread, so the next block is ready when the annotator presses Enter.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import LSRError
from ..io.formats import Bins, FormatError, LowResLabels
from ..io.project import Project, SlideEntry
from ..io.slide import TISSUE_MIN_FRACTION, Slide, SlideError, tissue_fraction
from .certainty import ORDERS, BinCertainty, bin_certainty, next_bin

#: Blocks reviewed per bin unless the annotator asks for another number.
DEFAULT_K = 12
DEFAULT_SEED = 0
#: Side of the thumbnail read to decide whether a block is background.
TISSUE_CHECK_PX = 32
#: The side of the block preview as the Block review shows it (px, the longer side).
REVIEW_PX = 288
#: Up/Down change the estimate by this many percentage points.
STEP_PCT = 5.0
#: How many prefetched block images are kept.
IMAGE_CACHE = 16


class ReviewError(LSRError, ValueError):
    """The project cannot be reviewed as asked; the message says why, for the widget."""


@dataclass(frozen=True)
class ReviewBlock:
    """One block under review: its store id, slide (index in ``project.slides``) and box."""

    id: int
    slide: int
    x: int
    y: int
    width: int
    height: int
    probability: float
    bin: int


def bin_label(bins: Bins, b: int) -> str:
    """A bin's edges as people write them: ``95–100``."""
    return bins.labels[b].replace("-", "–")


def parse_percent(text: str | float | int) -> float:
    """A cancer percentage from what the annotator typed; ValueError with a readable message."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
        shown = f"{value:g}"
    else:
        shown = str(text).strip()
        t = shown.removesuffix("%").strip().replace(",", ".")
        if not t:
            raise ValueError("Type a cancer percentage from 0 to 100 first.")
        try:
            value = float(t)
        except ValueError:
            raise ValueError(
                f"Refused: {shown!r} is not a number. Type a cancer percentage from 0 to 100."
            ) from None
    if not math.isfinite(value):
        raise ValueError(f"Refused: {shown!r} is not a number. Type a percentage from 0 to 100.")
    if not 0.0 <= value <= 100.0:
        raise ValueError(f"Refused: {shown} % is outside 0–100 %.")
    return value


# -- the project's slides and blocks -----------------------------------------------------------


class SlideSet:
    """The project's slides, each opened once on first use and shared between threads."""

    def __init__(self, project: Project) -> None:
        self.entries: list[SlideEntry] = list(project.slides)
        self._open: dict[int, Slide] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> Slide:
        with self._lock:
            slide = self._open.get(i)
            if slide is None:
                slide = self.entries[i].open()
                self._open[i] = slide
            return slide

    def close(self) -> None:
        with self._lock:
            for slide in self._open.values():
                slide.close()
            self._open.clear()


def load_blocks(
    project: Project, slides: SlideSet
) -> tuple[list[ReviewBlock], dict[int, LowResLabels]]:
    """Register every slide's low-res blocks in the store; the blocks and each slide's labels.

    Raises ReviewError when no slide has low-res labels, or a slide or CSV cannot be read.
    """
    if not any(e.labels is not None for e in project.slides):
        raise ReviewError(
            f"{project.folder.name}: this project has no low-resolution labels. Add "
            '`labels = "<slide>_lowres.csv"` to each [[slides]] entry of project.toml, or '
            "use a slide in the viewer with its low-res CSV."
        )
    store = project.store
    blocks: list[ReviewBlock] = []
    labels_by_slide: dict[int, LowResLabels] = {}
    for i, entry in enumerate(project.slides):
        if entry.labels is None:
            continue
        try:
            slide = slides[i]
            labels = entry.read_labels(slide, project.bins)
        except (SlideError, FormatError, OSError) as exc:
            raise ReviewError(str(exc)) from exc
        sid = store.add_slide(
            project.slide_key(entry.path),
            project.slide_key(entry.labels),
            slide.width,
            slide.height,
            slide.mpp,
        )
        boxes = labels.boxes()
        store.add_blocks(sid, boxes, labels.probability, labels.bin)
        ids = store.block_ids(sid)
        for (x, y, w, h), p, z in zip(boxes.tolist(), labels.probability, labels.bin):
            blocks.append(ReviewBlock(ids[(x, y, w, h)], i, x, y, w, h, float(p), int(z)))
        labels_by_slide[i] = labels
    return blocks, labels_by_slide


def has_tissue(slide: Slide, block: ReviewBlock, px: int = TISSUE_CHECK_PX) -> bool:
    """True when a thumbnail of the block passes the training tissue rule."""
    rgb = slide.read_region(block.x, block.y, block.width, block.height, size=(px, px))
    return bool(tissue_fraction(rgb) >= TISSUE_MIN_FRACTION)


class BinSampler:
    """One bin's blocks drawn in a seeded order, round-robin across slides, skipping background.

    ``is_tissue`` decides whether a drawn block is kept (None keeps every block). ``put_back``
    undoes the last draw, so a draw sequence is reproducible whatever was undone.
    """

    def __init__(
        self,
        blocks: list[ReviewBlock],
        seed: int,
        bin: int,
        is_tissue: Callable[[ReviewBlock], bool] | None = None,
    ) -> None:
        rng = np.random.default_rng([int(seed), int(bin)])
        by_slide: dict[int, list[ReviewBlock]] = defaultdict(list)
        for b in sorted(blocks, key=lambda b: b.id):
            by_slide[b.slide].append(b)
        slides = sorted(by_slide)
        self._queues = [[by_slide[s][k] for k in rng.permutation(len(by_slide[s]))] for s in slides]
        self._order = [int(k) for k in rng.permutation(len(slides))]
        self._cursor = [0] * len(slides)
        self._turn = 0
        self._history: list[tuple[int, tuple[int, ...], ReviewBlock]] = []
        self.is_tissue = is_tissue
        self.size = len(blocks)
        self.background = 0
        #: block ids never to draw (the guided order's blocks estimated in earlier sessions)
        self.taken: set[int] = set()
        #: True once a draw found no block left
        self.exhausted = False

    def draw(self) -> ReviewBlock | None:
        """The next tissue block (next slide in turn), or None when the bin is exhausted."""
        state = (self._turn, tuple(self._cursor))
        n = len(self._queues)
        for _ in range(n):
            q = self._order[self._turn % n]
            self._turn += 1
            queue = self._queues[q]
            while self._cursor[q] < len(queue):
                block = queue[self._cursor[q]]
                self._cursor[q] += 1
                if block.id in self.taken:
                    continue
                if self.is_tissue is None or self.is_tissue(block):
                    self._history.append((state[0], state[1], block))
                    return block
                self.background += 1
        self._turn, self._cursor = state[0], list(state[1])
        self.exhausted = True
        return None

    def peek(self) -> ReviewBlock | None:
        """The block the next draw gives, without drawing it."""
        block = self.draw()
        if block is not None:
            self.put_back(block)
        return block

    def put_back(self, block: ReviewBlock) -> bool:
        """Undo the last draw if it gave ``block``; False when it was not the last draw."""
        if not self._history or self._history[-1][2] != block:
            return False
        turn, cursor, _ = self._history.pop()
        self._turn, self._cursor = turn, list(cursor)
        self.exhausted = False
        return True


# -- the review session ------------------------------------------------------------------------


@dataclass(frozen=True)
class BinProgress:
    """Review progress of one bin for one annotator."""

    bin: int
    label: str
    done: int  # blocks of the sample with a live estimate
    target: int  # blocks of the sample that are not skipped (K while the bin has enough)
    skipped: int
    blocks: int  # blocks of the bin in the project, background included
    mean: float  # running mean of this annotator's estimates in the bin (NaN when none)
    std: float  # population std, as the prior uses (NaN when none)
    n: int

    def text(self) -> str:
        return f"bin {self.label} %: {self.done}/{self.target}"

    def stats_text(self) -> str:
        if self.n == 0:
            return "no estimates yet"
        return f"mean {self.mean:.1f} ± {self.std:.1f} % (n = {self.n})"


@dataclass(frozen=True)
class _Live:
    id: int
    percent: float | None
    skipped: bool
    bin: int


@dataclass
class _Undo:
    estimate_id: int
    block: ReviewBlock
    previous: _Live | None
    appended: list[ReviewBlock] = field(default_factory=list)


class ReviewSession:
    """One annotator reviewing K blocks per bin of a project (see the module docstring).

    ``blocks``/``slides`` may be given to share what the caller already loaded;
    ``check_tissue=False`` keeps background blocks (for tests and tissue-free samples).

    ``order="stratified"`` shows K blocks per bin, bin after bin. ``order="guided"`` draws
    each next block from the bin whose next estimate helps the prior most
    (``certainty.next_bin``), from the same seeded per-bin draws, with no K: the stop rule
    (``certainty.good_enough``) says when the prior is good enough.
    """

    def __init__(
        self,
        project: Project,
        annotator: str,
        k: int = DEFAULT_K,
        seed: int = DEFAULT_SEED,
        *,
        slides: SlideSet | None = None,
        blocks: list[ReviewBlock] | None = None,
        check_tissue: bool = True,
        order: str = "stratified",
    ) -> None:
        annotator = (annotator or "").strip()
        if not annotator:
            raise ReviewError("Type the annotator's name first: every estimate records who made it")
        if k < 1:
            raise ReviewError(f"K must be at least 1, got {k}")
        if order not in ORDERS:
            raise ReviewError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
        self.order = order
        self.project = project
        self.store = project.store
        self.bins: Bins = project.bins
        self.annotator = annotator
        self.k = int(k)
        self.seed = int(seed)
        self.slides = slides if slides is not None else SlideSet(project)
        if blocks is None:
            blocks, _ = load_blocks(project, self.slides)
        self.all_blocks = blocks
        nb = len(self.bins)
        by_bin: dict[int, list[ReviewBlock]] = defaultdict(list)
        for b in blocks:
            by_bin[b.bin].append(b)
        self.bin_sizes = [len(by_bin.get(z, [])) for z in range(nb)]
        self._tissue: dict[int, bool] = {}
        checker = self._is_tissue if check_tissue else None
        self.samplers = {z: BinSampler(by_bin[z], self.seed, z, checker) for z in by_bin}
        self.samples: dict[int, list[ReviewBlock]] = {z: [] for z in range(nb)}
        self.live: dict[int, _Live] = {
            e.block_id: _Live(e.id, e.percent, e.skipped, e.bin)
            for e in self.store.estimates(annotator, include_skipped=True)
        }
        self.undo_stack: list[_Undo] = []
        #: True when the last ``undo`` reached an estimate of an earlier session.
        self.undid_stored = False
        self._reinstated: set[int] = set()  # estimate ids an undo brought back: not undone
        #: What the last entry did: "next" (same bin), "bin done" or "all done".
        self.last_move = ""
        self._drawn: list[ReviewBlock] = []  # blocks the guided order drew for the last move
        self.current_bin: int | None = None
        self.position = 0
        self.finished = False
        if self.guided:
            self._resume_guided(by_bin)
            start_at = self._guided_next(draw=True)
        else:
            for z in range(nb):
                self._fill(z)
            start = next((z for z in range(nb) if self._first_pending(z) is not None), None)
            start_at = None if start is None else (start, self._first_pending(start) or 0)
        if start_at is not None:
            self._go(*start_at)
        else:  # nothing pending: show the first bin with blocks, marked finished
            start = next((z for z in range(nb) if self.samples[z]), None)
            if start is not None:
                self._go(start, 0)
                self.finished = True

    # -- sampling -------------------------------------------------------------------------------

    def _is_tissue(self, block: ReviewBlock) -> bool:
        ok = self._tissue.get(block.id)
        if ok is None:
            try:
                ok = has_tissue(self.slides[block.slide], block)
            except SlideError:
                ok = False
            self._tissue[block.id] = ok
        return ok

    @property
    def guided(self) -> bool:
        return self.order == "guided"

    def _resume_guided(self, by_bin: dict[int, list[ReviewBlock]]) -> None:
        """Blocks this annotator already estimated or skipped are the bins' samples (oldest
        entry first) and are never drawn again."""
        for z, blocks in by_bin.items():
            seen = sorted(
                (b for b in blocks if b.id in self.live), key=lambda b: self.live[b.id].id
            )
            self.samples[z] = seen
            self.samplers[z].taken = {b.id for b in seen}

    def _tissue_blocks(self, z: int) -> int:
        """Blocks of bin z the review can show: the bin's blocks less the background found."""
        sampler = self.samplers.get(z)
        return 0 if sampler is None else self.bin_sizes[z] - sampler.background

    def certainty(self, assume: ReviewBlock | None = None) -> list[BinCertainty]:
        """How certain each bin's mean is from this annotator's estimates
        (``certainty.bin_certainty``; blocks: the bin's blocks less the background found).
        ``assume``: a pending block counted as estimated at its bin's mean (50 % in a bin
        without estimates), to foresee the choice after its entry."""
        values: dict[int, list[float]] = defaultdict(list)
        for v in self.live.values():
            if not v.skipped and v.percent is not None:
                values[v.bin].append(v.percent)
        if assume is not None and self.status(assume) == "pending":
            have = values[assume.bin]
            have.append(float(np.mean(have)) if have else 50.0)
        exhausted = [
            z
            for z, sampler in self.samplers.items()
            if sampler.exhausted and self._first_pending(z) is None
        ]
        sizes = [self._tissue_blocks(z) for z in range(len(self.bins))]
        return bin_certainty(sizes, values, exhausted)

    def _guided_next(
        self, draw: bool, exclude: ReviewBlock | None = None
    ) -> tuple[int, int] | ReviewBlock | None:
        """Where the guided order goes next: (bin, position) of a pending block of the chosen
        bin's sample, else a new draw from that bin (appended to the sample and noted in
        ``_drawn`` when ``draw``; returned as a block, not drawn, when not); None when no bin
        has a block left. ``exclude``: the block on screen, not a candidate."""
        rows = self.certainty(assume=None if draw else exclude)
        while True:
            z = next_bin(rows)
            if z is None:
                return None
            sample = self.samples[z]
            for i, b in enumerate(sample):
                if b != exclude and self.status(b) == "pending":
                    return z, i
            sampler = self.samplers[z]
            block = sampler.draw() if draw else sampler.peek()
            if block is not None:
                if not draw:
                    return block
                sample.append(block)
                self._drawn.append(block)
                return z, len(sample) - 1
            rows = [r if r.bin != z else _no_gain(r) for r in rows]

    def _fill(self, z: int) -> list[ReviewBlock]:
        """Draw until the bin's sample holds K blocks that are not skipped; the new blocks
        (none in the guided order, which draws one block at a time)."""
        sampler = self.samplers.get(z)
        added: list[ReviewBlock] = []
        if sampler is None or self.guided:
            return added
        sample = self.samples[z]
        while sum(1 for b in sample if self.status(b) != "skipped") < self.k:
            block = sampler.draw()
            if block is None:
                break
            sample.append(block)
            added.append(block)
        return added

    # -- state ---------------------------------------------------------------------------------

    @property
    def current(self) -> ReviewBlock | None:
        """The block on screen, or None when there is none (no blocks, or all reviewed)."""
        if self.current_bin is None or self.finished:
            return None
        sample = self.samples[self.current_bin]
        return sample[self.position] if 0 <= self.position < len(sample) else None

    def status(self, block: ReviewBlock) -> str:
        """``pending``, ``estimated`` or ``skipped`` for this annotator."""
        live = self.live.get(block.id)
        if live is None:
            return "pending"
        return "skipped" if live.skipped else "estimated"

    def estimate_of(self, block: ReviewBlock) -> float | None:
        live = self.live.get(block.id)
        return None if live is None or live.skipped else live.percent

    def progress(self, z: int | None = None) -> BinProgress:
        """Progress and running mean ± std of bin ``z`` (default: the current bin)."""
        if z is None:
            z = self.current_bin if self.current_bin is not None else 0
        sample = self.samples[z]
        states = [self.status(b) for b in sample]
        values = np.array(
            [v.percent for v in self.live.values() if v.bin == z and not v.skipped], float
        )
        return BinProgress(
            z,
            bin_label(self.bins, z),
            states.count("estimated"),
            len(sample) - states.count("skipped"),
            states.count("skipped"),
            self.bin_sizes[z],
            float(values.mean()) if len(values) else math.nan,
            float(values.std()) if len(values) else math.nan,
            len(values),
        )

    def bin_message(self, z: int) -> str | None:
        """Why bin ``z`` has nothing to review, or None when it has blocks."""
        if self.samples[z] or self._can_draw(z):
            return None
        label = bin_label(self.bins, z)
        if self.bin_sizes[z] == 0:
            return f"Bin {label} % has no blocks: no low-res label of this project falls in it."
        return (
            f"Bin {label} % has {self.bin_sizes[z]} block(s), all background or skipped: "
            "nothing to review."
        )

    # -- navigation ----------------------------------------------------------------------------

    def _go(self, z: int, position: int) -> None:
        self.current_bin, self.position, self.finished = z, position, False

    def _first_pending(self, z: int, after: int = -1, exclude: int | None = None) -> int | None:
        sample = self.samples[z]
        n = len(sample)
        for step in range(1, n + 1):
            i = (after + step) % n if after >= 0 else step - 1
            if i == exclude:
                continue
            if self.status(sample[i]) == "pending":
                return i
        return None

    def _can_draw(self, z: int) -> bool:
        """The guided order can still draw a block of bin z."""
        sampler = self.samplers.get(z)
        return self.guided and sampler is not None and sampler.peek() is not None

    def _after_entry(self, draw: bool = False) -> tuple[int, int] | ReviewBlock | None:
        """Where the session goes when the current block is done: next pending block (the
        guided order: see ``_guided_next``)."""
        if self.current_bin is None:
            return None
        if self.guided:
            return self._guided_next(draw, exclude=self.current)
        z = self.current_bin
        p = self._first_pending(z, self.position, exclude=self.position)
        if p is not None:
            return z, p
        nb = len(self.bins)
        for step in range(1, nb):
            zz = (z + step) % nb
            p = self._first_pending(zz)
            if p is not None:
                return zz, p
        return None

    def peek_next(self) -> ReviewBlock | None:
        """The block an entry on the current block would bring up (for prefetching; in the
        guided order, the choice before the entry's value is known)."""
        target = self._after_entry()
        if target is None or isinstance(target, ReviewBlock):
            return target
        return self.samples[target[0]][target[1]]

    def _advance(self) -> str:
        z = self.current_bin
        target = self._after_entry(draw=True)
        assert not isinstance(target, ReviewBlock)
        if target is None:
            self.finished = True
            return "all done"
        self._go(*target)
        return "next" if target[0] == z else "bin done"

    def next(self) -> bool:
        """Next block of the bin (N); False at the bin's last block."""
        if self.current_bin is None:
            return False
        if self.finished:
            self.finished = False
            return True
        if self.position + 1 >= len(self.samples[self.current_bin]):
            return False
        self.position += 1
        return True

    def prev(self) -> bool:
        """Previous block of the bin (P); False at the bin's first block."""
        if self.current_bin is None:
            return False
        if self.finished:
            self.finished = False
            return True
        if self.position <= 0:
            return False
        self.position -= 1
        return True

    def goto_bin(self, z: int) -> bool:
        """Show bin ``z`` at its first pending block (the guided order draws one when the bin
        has none on screen yet); False (nothing changes) when it is empty."""
        if not 0 <= z < len(self.bins):
            return False
        if self.guided and self._first_pending(z) is None and self._can_draw(z):
            self.samples[z].append(self.samplers[z].draw())
        if not self.samples[z]:
            return False
        p = self._first_pending(z)
        self._go(z, 0 if p is None else p)
        return True

    def next_bin(self) -> int | None:
        """Go to the next bin that has blocks (B), wrapping around; its index or None."""
        nb = len(self.bins)
        start = self.current_bin if self.current_bin is not None else -1
        for step in range(1, nb + 1):
            z = (start + step) % nb
            if (self.samples[z] or self._can_draw(z)) and self.goto_bin(z):
                return z
        return None

    # -- entries -------------------------------------------------------------------------------

    def _commit(self, percent: float | None, skipped: bool) -> tuple[int, str]:
        block = self.current
        if block is None:
            raise ReviewError("There is no block to estimate.")
        previous = self.live.get(block.id)
        eid = self.store.add_estimate(block.id, self.annotator, percent, skipped=skipped)
        self.live[block.id] = _Live(eid, percent if not skipped else None, skipped, block.bin)
        undo = _Undo(eid, block, previous)
        undo.appended = self._fill(block.bin)
        self.undo_stack.append(undo)
        self._drawn = []
        move = self._advance()
        undo.appended += self._drawn
        return eid, move

    def enter(self, percent: str | float) -> int:
        """Commit this annotator's estimate for the current block, then move on; the id."""
        eid, self.last_move = self._commit(parse_percent(percent), False)
        return eid

    def skip(self) -> int:
        """Commit a skip of the current block (a replacement is drawn), then move on; the id."""
        eid, self.last_move = self._commit(None, True)
        return eid

    @property
    def resting_block(self) -> ReviewBlock | None:
        """The block the session rests on once every block is reviewed (None while one is
        on screen, or without blocks): the canvas shows its slide."""
        if self.current_bin is None or not self.finished:
            return None
        sample = self.samples[self.current_bin]
        return sample[self.position] if 0 <= self.position < len(sample) else None

    def undo(self) -> ReviewBlock | None:
        """Undo the last entry and go back to its block; None when there is none.

        This session's entries go first (newest first); then this annotator's estimates of
        earlier sessions in the store, newest first (``undid_stored`` says which it was).
        """
        self.undid_stored = False
        if not self.undo_stack:
            return self._undo_stored()
        u = self.undo_stack.pop()
        self.store.undo_estimate(u.estimate_id, reinstate=u.previous.id if u.previous else None)
        if u.previous is None:
            self.live.pop(u.block.id, None)
        else:
            self.live[u.block.id] = u.previous
        for extra in reversed(u.appended):
            sample = self.samples[extra.bin]
            if sample and sample[-1] == extra and self.status(extra) == "pending":
                if self.samplers[extra.bin].put_back(extra):
                    sample.pop()
                    continue
            break
        self._go(u.block.bin, self.samples[u.block.bin].index(u.block))
        return u.block

    def _undo_stored(self) -> ReviewBlock | None:
        """Undo this annotator's newest live estimate (or skip) made before this session of a
        block in the samples; the estimate it had replaced, if any, comes back."""
        shown = {b.id: b for sample in self.samples.values() for b in sample}
        candidates = [
            (live.id, block_id)
            for block_id, live in self.live.items()
            if block_id in shown and live.id not in self._reinstated
        ]
        if not candidates:
            return None
        eid, block_id = max(candidates)
        rows = self.store.query(
            "SELECT p.id, p.percent, p.skipped FROM estimates p JOIN estimates e ON e.id = ? "
            "WHERE p.block_id = e.block_id AND p.annotator = e.annotator AND p.id < e.id "
            "AND p.undone_time = e.time ORDER BY p.id DESC LIMIT 1",
            (eid,),
        )
        previous = rows[0] if rows else None
        self.store.undo_estimate(eid, reinstate=previous[0] if previous else None)
        block = shown[block_id]
        if previous is None:
            self.live.pop(block_id, None)
        else:
            skipped = bool(previous[2])
            self.live[block_id] = _Live(
                previous[0], None if skipped else previous[1], skipped, block.bin
            )
            self._reinstated.add(previous[0])
        self._go(block.bin, self.samples[block.bin].index(block))
        self.undid_stored = True
        return block


def _no_gain(row: BinCertainty) -> BinCertainty:
    """``row`` with no gain: its bin has no block left to draw."""
    from dataclasses import replace

    return replace(row, gain=0.0)


# -- block images and prefetch -----------------------------------------------------------------


class BlockImages:
    """Block images at the preview's resolution (``side`` px on the longer side, at most
    level 0's pixels), read ahead in a background thread.

    ``get`` returns a prefetched image or reads it at once; ``prefetch`` queues a read;
    ``enabled = False`` turns prefetching off (the benchmark's baseline). ``submit`` runs
    other slow work (the store's view log) on a second worker so reads never wait for it.
    """

    def __init__(self, project: Project, slides: SlideSet, side: int = REVIEW_PX) -> None:
        self.slides = slides
        self.side = int(side)
        self.enabled = True
        self._cache: OrderedDict[int, Future] = OrderedDict()
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="napari-lsr-prefetch")
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="napari-lsr-log")
        self._closed = False

    def read(self, block: ReviewBlock) -> np.ndarray:
        """The block's RGB uint8 image at the preview's resolution (read now): ``side`` px on
        its longer side from the best pyramid level, or level 0's pixels when fewer."""
        slide = self.slides[block.slide]
        w, h = block.width, block.height
        scale = min(1.0, self.side / max(w, h))
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        return slide.read_region(block.x, block.y, w, h, size=size)

    def prefetch(self, block: ReviewBlock | None) -> None:
        """Start reading ``block`` in the background (no-op when disabled or cached)."""
        if block is None or not self.enabled or self._closed or block.id in self._cache:
            return
        self._cache[block.id] = self._reader.submit(self.read, block)
        while len(self._cache) > IMAGE_CACHE:
            self._cache.popitem(last=False)

    def get(self, block: ReviewBlock) -> np.ndarray:
        fut = self._cache.get(block.id) if self.enabled else None
        if fut is not None:
            self._cache.move_to_end(block.id)
            try:
                return fut.result()
            except Exception:
                self._cache.pop(block.id, None)
        return self.read(block)

    def clear(self) -> None:
        self._cache.clear()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future | None:
        if self._closed:
            return None
        return self._writer.submit(fn, *args)

    def close(self, wait: bool = True) -> None:
        self._closed = True
        self._cache.clear()
        self._reader.shutdown(wait=wait, cancel_futures=True)
        self._writer.shutdown(wait=wait)


def release_review(resources: dict[str, Any], *_args: Any) -> None:
    """Close what a review holds open, each once: its ``images`` reader (after the view log's
    ``store`` connection, closed on the log's own thread) and its ``slides``. The entries are
    taken out of ``resources``, so a second call (a close, then Qt's ``destroyed``) is a no-op."""
    images = resources.pop("images", None)
    slides = resources.pop("slides", None)
    store = resources.pop("store", None)
    if images is not None:
        if store is not None:
            images.submit(store.close)  # the log thread's own connection
        images.close(wait=True)
    if slides is not None:
        slides.close()
