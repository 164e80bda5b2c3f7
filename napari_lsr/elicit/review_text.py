"""What the Block review dock says and which typed estimates it accepts, worked out without Qt."""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from pathlib import Path

from ..io.formats import Bins, FormatError
from ..io.interop import default_class, lowres_classes
from .certainty import BinCertainty, good_enough, stop_message
from .review import BinProgress, ReviewBlock, ReviewSession, bin_label, parse_percent

#: Shown when the keyboard leaves the dock while a block waits for its estimate.
FOCUS_HINT = "The keys now go to the canvas: click this dock to type estimates again."
KEYS_HELP = (
    "Keys: digits then Enter record · ↑/↓ ±5 · S skip · Backspace/Ctrl+Z undo · "
    "N/P next/previous · B next bin · Esc clear"
)

# -- fixed messages ----------------------------------------------------------------------------

START_HINT = "Open a project folder, or use a slide in the viewer."
NO_PROJECT_TITLE = "No project open"
NO_BLOCKS_TITLE = "No blocks to review"
NOT_REVIEWING_TITLE = "Not reviewing"
ALL_REVIEWED = "All sampled blocks reviewed."
ALL_DONE = "Every sampled block of every bin has an estimate."
ALL_DONE_REVISE = f"{ALL_DONE} Undo, N/P or B to revise."
OPEN_FIRST = "Open a project first."
FOLDER_FIRST = "Type or browse to a project folder first."
NO_SLIDE = "No slide in the viewer: open a slide (File > Open) or a project."
NO_PROJECT_BLOCKS = "This project has no blocks to review."
NO_BLOCK_ON_SCREEN = "No block on screen: every sampled block is reviewed (Undo, N/P or B)."
NOTHING_TO_UNDO = "Nothing to undo: you have no estimate of these blocks in the store."
LAST_OF_BIN = "Last block of this bin: B goes to the next bin."
FIRST_OF_BIN = "First block of this bin."
NO_BIN = "No bin has blocks to review."
#: The Order choices as the dock shows them (``ReviewSession(order=...)``), guided first.
ORDER_TEXT = {
    "guided": "guided",
    "stratified": "stratified (K per bin)",
}
ORDER_TIP = (
    "guided: each next block comes from the bin whose average is least certain for the "
    "most blocks (a bin not seen yet, a wide one, one that falls where the bins rise); it "
    "says when more estimates would change no bin's average by more than 5 points.\n"
    "stratified: K blocks of every bin (K: blocks per bin), one bin after the other."
)


def default_annotator() -> str:
    """The login name, as a first guess at who is annotating."""
    try:
        return getpass.getuser()
    except Exception:  # no login name (some containers)
        return os.environ.get("USER", "")


def labels_classes(text: str) -> tuple[list[str], str | None]:
    """The classes of the WSInfer labels file at ``text`` and the one chosen by default (the
    tumour class); ``([], None)`` when ``text`` is no file or not a WSInfer file."""
    path = Path(text.strip()).expanduser()
    classes: list[str] = []
    if text.strip() and path.is_file():
        try:
            classes = lowres_classes(path)
        except (FormatError, OSError):
            classes = []
    return classes, default_class(classes)


def choose_labels_text(slide_name: str) -> str:
    """Asks for the low-res labels of the slide layer ``slide_name``."""
    return f"Choose the low-res CSV of {slide_name} first."


# -- the typed estimate ------------------------------------------------------------------------


def partial_percent(text: str) -> bool:
    """True when ``text`` is a percentage being typed: empty, ``.``, or a number in 0-100
    with at most one ``%`` at the end."""
    t = text.strip()
    if t.count("%") > 1 or ("%" in t and not t.endswith("%")):
        return False
    t = t.removesuffix("%").strip().replace(",", ".")
    if t in ("", "."):
        return True
    try:
        return 0.0 <= float(t) <= 100.0
    except ValueError:
        return False


def typed_error(text: str) -> str | None:
    """The message for an entry that can no longer become a percentage in 0-100 (said as
    soon as it is typed; Enter refuses it), or None while it still can."""
    if partial_percent(text):
        return None
    return f"{text.strip()} is outside 0–100 %: Backspace to correct it."


def entry_controls(text: str) -> tuple[bool, float | None]:
    """What the spin box and slider show while the entry holds ``text``: ``(follow, value)``.

    ``value`` None is no value ("–"). ``follow`` is False only for the start of a number
    (``.``, ``,``, ``%``): they keep what they show. They never show a value other than the
    entry's."""
    if not text.strip():
        return True, None
    try:
        return True, parse_percent(text)
    except ValueError:
        if text.strip().removesuffix("%").strip() not in ("", ".", ","):
            return True, None
        return False, None


def stepped(text: str, shown: int, delta: float) -> float:
    """The estimate after Up/Down: what is typed (else the spin box's ``shown`` value, "–"
    counting as 0) changed by ``delta`` points, within 0-100."""
    try:
        base = parse_percent(text)
    except ValueError:
        base = float(max(0, shown))
    return min(100.0, max(0.0, base + delta))


# -- what an action says -----------------------------------------------------------------------


def session_text(session: ReviewSession, n_slides: int) -> str:
    """The line shown when a review starts: the project, its blocks, K and the seed."""
    how = "guided order" if session.guided else f"{session.k} per bin"
    return (
        f"{session.project.folder.name}: {len(session.all_blocks)} blocks in {n_slides} "
        f"slide(s); {how}, seed {session.seed}."
    )


def recorded_text(percent: float, block: ReviewBlock) -> str:
    return f"Recorded {percent:g} % for block {block.id}."


def skipped_text(block: ReviewBlock) -> str:
    return f"Skipped block {block.id}."


def undone_text(block: ReviewBlock, earlier: bool) -> str:
    """Says the undone block is back; ``earlier`` when the estimate was of an earlier session."""
    where = " (an estimate of an earlier session)" if earlier else ""
    return f"Undone{where}: block {block.id} is back for a new estimate."


def bin_text(bins: Bins, z: int) -> str:
    """Says bin ``z`` is on screen: ``Bin 95–100 %.``"""
    return f"Bin {bin_label(bins, z)} %."


def empty_bin_text(session: ReviewSession, z: int) -> str:
    """Why bin ``z`` cannot be shown."""
    return session.bin_message(z) or f"Bin {z} has nothing to review."


def moved_text(what: str, session: ReviewSession, prev_bin: int | None) -> str:
    """``what`` an entry did, and where the session went after it: the bin ``prev_bin`` (the
    entry's bin) complete, or every bin done (the guided order: the bin it goes to)."""
    if session.guided and session.last_move == "bin done" and session.current_bin is not None:
        return f"{what} Next: bin {bin_label(session.bins, session.current_bin)} %."
    if session.last_move == "bin done" and prev_bin is not None:
        p = session.progress(prev_bin)
        return (
            f"{what} Bin {p.label} % is complete ({p.done}/{p.target}); "
            f"now bin {bin_label(session.bins, session.current_bin)} %."
        )
    if session.last_move == "all done":
        return f"{what} {ALL_DONE}"
    return what


# -- the status lines --------------------------------------------------------------------------


def bin_item_text(p: BinProgress, c: BinCertainty | None = None) -> str:
    """A bin in the Bin chooser: its label, progress and blocks (with ``c``, the guided
    order's line: estimates and how certain the bin's average is)."""
    if p.blocks == 0:
        return f"{p.label} %: no blocks"
    if c is not None:
        return f"{p.label} %: {p.done} estimated, {c.word}  ({c.blocks} blocks)"
    return f"{p.label} %: {p.done}/{p.target}  ({p.blocks} blocks)"


#: The colour of each certainty word in the dock's bin list.
CERTAINTY_COLOR = {
    "settled": "#7fd87f",
    "nearly settled": "#e6c84c",
    "unsure": "#f08c6c",
    "not reviewed": "#a0a0a0",
    "no blocks": "#707070",
}


#: The mark after each bin's label in the dock's legend, by certainty word.
CERTAINTY_MARK = {
    "settled": "✓",
    "nearly settled": "≈",
    "unsure": "?",
    "not reviewed": "·",
    "no blocks": "",
}


def certainty_legend(rows: list[BinCertainty], bins: Bins) -> list[tuple[str, str, str]]:
    """Each bin's legend entry: (label with its certainty mark, colour, full text for the
    tooltip)."""
    return [
        (
            f"{bin_label(bins, c.bin)} {CERTAINTY_MARK[c.word]}".rstrip(),
            CERTAINTY_COLOR[c.word],
            f"bin {bin_label(bins, c.bin)} %: {c.text()}",
        )
        for c in rows
    ]


CERTAINTY_KEY = "✓ settled · ≈ nearly · ? unsure · · not reviewed"


def block_text(session: ReviewSession, block: ReviewBlock) -> str:
    """The block's place in its bin's sample, slide, box, probability and state."""
    entry = session.project.slides[block.slide]
    sample = session.samples[block.bin]
    state = session.status(block)
    if state == "estimated":
        state = f"estimated {session.estimate_of(block):g} %"
    return (
        f"block {sample.index(block) + 1} of {len(sample)} · {entry.name} "
        f"({block.x}, {block.y}) {block.width}×{block.height} px · "
        f"p = {block.probability:.3f} · {state}"
    )


@dataclass(frozen=True)
class ReviewStatus:
    """What the dock's status shows for the session's current bin and block."""

    title: str  # the bin's progress, in bold
    done: int  # the progress bar: done of target
    target: int
    stats: str  # running mean ± std and the annotator
    bin_items: list[str]  # each bin's line in the Bin chooser
    current_bin: int
    block: str  # the block on screen, or that every sampled block is reviewed
    certainty: str  # how certain the current bin's average is
    legend: list[tuple[str, str, str]]  # each bin's legend entry with its certainty
    stop: str  # whether the prior is good enough (the stop rule), in plain words
    good_enough: bool


def review_status(session: ReviewSession | None) -> ReviewStatus | None:
    """The status of ``session``; None when there is no bin to show (no session or no
    blocks)."""
    if session is None or session.current_bin is None:
        return None
    p = session.progress()
    block = session.current
    rows = session.certainty()
    title, done, target = p.text(), p.done, p.target
    if session.guided:  # no K: the bar counts the bins whose average is settled
        with_blocks = [c for c in rows if c.blocks]
        done, target = sum(c.settled for c in with_blocks), len(with_blocks)
        title = f"bin {p.label} %: {p.done} estimated · {done} of {target} bins settled"
    return ReviewStatus(
        title=title,
        done=done,
        target=target,
        stats=f"{p.stats_text()} · annotator: {session.annotator}",
        bin_items=[
            bin_item_text(session.progress(z), rows[z] if session.guided else None)
            for z in range(len(session.bins))
        ],
        current_bin=session.current_bin,
        block=ALL_REVIEWED if block is None else block_text(session, block),
        certainty=f"This bin's average: {rows[session.current_bin].text()}.",
        legend=certainty_legend(rows, session.bins),
        stop=stop_message(rows),
        good_enough=good_enough(rows),
    )
