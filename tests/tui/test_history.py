"""The history screen and its parts against an in-memory journal: filters (hostile input first),
paging back over forward reads, decoding, and the screen's keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from flowmgr_tui.app import FlowMgrApp
from flowmgr_tui.commands import ContainerCommands
from flowmgr_tui.history_pages import HistoryPager, HistoryRow, decode
from flowmgr_tui.history_query import JOURNALLED, FilterError, HistoryFilter, parse_filter
from flowmgr_tui.screens.help import HelpScreen
from flowmgr_tui.screens.history import HistoryScreen
from flowmgr_tui.state.activity_keys import merge_activity
from server.core.events import ActivityLogged, ContainerCrashed
from server.core.journal.records import HistoryPage, JournalRecord
from tests.tui.helpers import until
from tests.tui.make_recording import ECHO_ID, ECHO_LOGS, NOW, T0, build
from tests.tui.recording import ReplayBackend, page_of

pytestmark = pytest.mark.tui

NAMES = {"a" * 64: "web-1", "ab" * 32: "web-2", "c" * 64: "worker"}
SIZE = (120, 30)


def _parse(**kw: str) -> HistoryFilter:
    return parse_filter(names=NAMES, clock=lambda: NOW, **kw)


# --- filters: hostile input first ------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "kw"),
    [
        ("from", {"since": "yesterday"}),
        ("from", {"since": "25:99"}),
        ("from", {"since": "2026-13-01"}),
        ("from", {"since": "999999d"}),
        ("from", {"since": "12:00\x00"}),
        ("from", {"since": "9" * 10_000}),
        ("to", {"until": "-5m"}),
        ("to", {"since": "12:30", "until": "12:00"}),
        ("types", {"types": "bogus"}),
        ("types", {"types": "activity_log, container_log"}),
        ("types", {"types": "' OR 1=1 --"}),
        ("types", {"types": "x" * 5000}),
        ("flow", {"flow": "nope"}),
        ("flow", {"flow": "a"}),  # web-1 and web-2 both start with it
        ("flow", {"flow": "f" * 63}),
    ],
)
def test_bad_filters_name_the_field_and_what_to_type(field: str, kw: dict[str, str]) -> None:
    with pytest.raises(FilterError) as caught:
        _parse(**kw)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ") and len(str(caught.value)) < 400


def test_good_filters() -> None:
    flt = _parse(flow="web-2", types="container_crashed activity_log", since="2h", until="13:30")
    assert flt.container_id == "ab" * 32
    assert flt.types == ("container_crashed", "activity_log")
    assert flt.since == NOW - timedelta(hours=2)
    assert flt.until == datetime(2026, 1, 1, 13, 30, tzinfo=UTC)
    assert _parse(flow="c" * 12).container_id == "c" * 64  # an id prefix
    assert _parse(flow="d" * 64).container_id == "d" * 64  # a deleted flow: its full id
    assert _parse(since="2026-01-01 12:05").since == T0 + timedelta(minutes=5)
    day = _parse(since="2026-01-01", until="2026-01-01")  # the whole day
    assert day.since == T0 - timedelta(hours=12)
    assert day.until == T0 + timedelta(hours=12) - timedelta(microseconds=1)
    assert _parse() == HistoryFilter()
    assert "activity_log" in JOURNALLED and "container_log" not in JOURNALLED


# --- paging and decoding ---------------------------------------------------------------------


class FakeJournal:
    """`get_history` over a list, counting reads; answers like the journal (seq > since)."""

    def __init__(self, records: list[JournalRecord]) -> None:
        self.records = records
        self.reads = 0

    async def get_history(
        self,
        since_seq: int | None = None,
        container_id: str | None = None,
        types: list[str] | None = None,
        limit: int = 100,
    ) -> HistoryPage:
        assert 1 <= limit <= 1000 and (since_seq is None or since_seq >= 0)
        self.reads += 1
        return page_of(self.records, since_seq, container_id, types, limit)


def _journal(n: int, rare_every: int = 97, first: int = 1) -> list[JournalRecord]:
    """n activity lines, one a second; every `rare_every`-th is worker's, the rest web-1's."""
    out = []
    for seq in range(first, first + n):
        cid = "c" * 64 if seq % rare_every == 0 else "a" * 64
        data = {
            "activity_type": "note",
            "container_id": cid,
            "message": f"line {seq}",
            "details": {},
            "timestamp": (T0 + timedelta(seconds=seq)).isoformat(),
        }
        out.append(JournalRecord(seq, "activity_log", data, cid))
    return out


async def _all_pages(pager: HistoryPager) -> list[list[HistoryRow]]:
    pages = []
    while not pager.done:
        pages.append(await pager.older())
    return pages


async def test_pages_go_back_without_gap_or_repeat() -> None:
    journal = FakeJournal(_journal(2000, first=101))  # seqs 1-100 fell to retention
    pager = HistoryPager(journal, HistoryFilter(), page_size=64)
    pages = await _all_pages(pager)
    seqs = [row.seq for page in reversed(pages) for row in page]
    assert seqs == list(range(101, 2101))
    assert all(len(p) == 64 for p in pages[:-1]) and pages[-1]
    assert pages[0][-1].seq == 2100  # the first page is the newest
    assert journal.reads <= 2 * len(pages) + 2


async def test_a_rare_flow_takes_few_reads() -> None:
    journal = FakeJournal(_journal(20_000))
    pager = HistoryPager(journal, HistoryFilter(container_id="c" * 64), page_size=50)
    pages = await _all_pages(pager)
    seqs = [row.seq for page in reversed(pages) for row in page]
    assert seqs == [s for s in range(1, 20_001) if s % 97 == 0]
    assert journal.reads < 20  # windows widen; no read per page of other flows' events


async def test_a_time_range_reads_only_around_it() -> None:
    journal = FakeJournal(_journal(20_000))
    since, until_ = T0 + timedelta(seconds=15_000), T0 + timedelta(seconds=15_099)
    pager = HistoryPager(journal, HistoryFilter(since=since, until=until_), page_size=40)
    pages = await _all_pages(pager)
    seqs = [row.seq for page in reversed(pages) for row in page]
    assert seqs == list(range(15_000, 15_100))
    assert journal.reads < 40  # bisection to the end of the range, then a few windows


async def test_an_empty_journal_is_one_read_and_done() -> None:
    journal = FakeJournal([])
    pager = HistoryPager(journal, HistoryFilter(), page_size=10)
    assert await pager.older() == [] and pager.done and journal.reads == 1


def test_records_that_do_not_decode_are_shown_raw() -> None:
    odd = [
        JournalRecord(1, "activity_log", {"activity_type": 3}, None),
        JournalRecord(2, "from_the_future", {"x": 1, "timestamp": "not a time"}, None),
        JournalRecord(3, "container_crashed", {"timestamp": float("inf")}, "a" * 64),
        JournalRecord(4, "status_changed", "not a dict", None),  # type: ignore[arg-type]
    ]
    delivered = {"container_id": "a" * 64, "message_id": "m-1", "timestamp": T0.isoformat()}
    row = decode(JournalRecord(9, "message_delivered", delivered, "a" * 64))
    assert row.summary == "queued message m-1 delivered (acknowledged by the flow)"
    assert row.at == T0
    rows = [decode(r) for r in odd]
    assert rows[0].push is None and rows[0].summary.startswith("[malformed: ")
    assert rows[1].push is None and '"x":1' in rows[1].summary and rows[1].at is None
    assert rows[2].at is None and rows[3].push is None


def test_live_and_journalled_activity_merge_once() -> None:
    cid = "a" * 64
    line = ActivityLogged(activity_type="note", container_id=cid, message="m", at=T0)
    crash = ContainerCrashed(container_id=cid, name="web-1", exit_code=1, error="e", logs=[], at=T0)
    later = ActivityLogged(activity_type="x", container_id=cid, message="n", at=NOW)
    again = ContainerCrashed(
        container_id=cid,
        name="web-1",
        exit_code=1,
        error="e",
        logs=[],
        at=T0 + timedelta(microseconds=1),
    )
    assert merge_activity([later, line, crash], [line, again]) == [line, crash, later]


# --- the screen ------------------------------------------------------------------------------


def _app() -> FlowMgrApp:
    backend = ReplayBackend(build(), logs={ECHO_ID: ECHO_LOGS})
    return FlowMgrApp(backend, start_backend=True, clock=lambda: NOW, bridge_interval=0.01)


async def _history(app: FlowMgrApp, pilot: Any) -> HistoryScreen:
    backend = app.backend
    assert isinstance(backend, ReplayBackend)
    await until(pilot, backend.replayed.is_set, "the replay")
    await pilot.press("h")
    await until(pilot, lambda: isinstance(app.screen, HistoryScreen), "the history screen")
    screen = app.screen
    assert isinstance(screen, HistoryScreen)
    return screen


def _status(screen: HistoryScreen) -> str:
    return str(screen.query_one("#history-status").render())


async def test_the_history_screen_lists_filters_and_says_what_is_wrong() -> None:
    app = _app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await _history(app, pilot)
        await until(pilot, lambda: len(screen.rows) == 9, "nine journalled events")
        assert "9 events (seq 1-9), newest last | all loaded" in _status(screen)
        seqs = [row.seq for row in screen.rows]
        assert seqs == sorted(seqs)
        # A time that does not parse: said in the screen, the rows stay, nothing raised.
        await pilot.press("slash", "tab", "tab", *"yesterday", "enter")
        await until(pilot, lambda: screen.problem.startswith("from: 'yesterday'"), "the error")
        assert screen.query_one("#history-from").has_class("-invalid")
        assert len(screen.rows) == 9 and screen.is_current
        # An unknown type, then a good one.
        screen.query_one("#history-from").value = ""  # type: ignore[attr-defined]
        await pilot.click("#history-types")
        await pilot.press(*"nosuch", "enter")
        await until(pilot, lambda: "unknown event 'nosuch'" in screen.problem, "the type error")
        screen.query_one("#history-types").value = "container_crashed"  # type: ignore[attr-defined]
        await pilot.press("enter")
        await until(pilot, lambda: [r.event for r in screen.rows] == ["container_crashed"], "1")
        assert "exit 3: Exited with code 3 | ValueError: bad input" in screen.rows[0].summary
        detail = str(screen.query_one("#history-detail").render())
        assert "container_crashed" in detail and "\n    ValueError: bad input" in detail
        assert not screen.problem
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, HistoryScreen), "back")
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "help")
        await pilot.press("h")  # over the help: no history on top of it
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        # The palette opens it too.
        commands = {text: run for text, _, run in ContainerCommands(app.screen)._commands()}
        commands["History: journalled events"]()
        await until(pilot, lambda: isinstance(app.screen, HistoryScreen), "history again")


async def test_older_pages_load_on_demand_and_a_failing_journal_is_shown() -> None:
    backend = ReplayBackend(build())
    app = FlowMgrApp(backend, start_backend=True, clock=lambda: NOW, bridge_interval=0.01)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, backend.replayed.is_set, "the replay")
        screen = HistoryScreen(backend, app.state, clock=lambda: NOW, page_size=4)
        app.push_screen(screen)
        await until(pilot, lambda: [r.seq for r in screen.rows] == [6, 7, 8, 9], "newest four")
        assert "o: older page" in _status(screen)
        await pilot.press("o")
        await until(pilot, lambda: len(screen.rows) == 8, "eight")
        await pilot.press("o")
        await until(pilot, lambda: [r.seq for r in screen.rows] == list(range(1, 10)), "all")
        assert "all loaded" in _status(screen)

        async def broken(*_: Any, **__: Any) -> HistoryPage:
            raise FilterError("journal", "off")  # any exception: the screen says it

        backend.get_history = broken  # type: ignore[method-assign]
        await pilot.press("r")
        await until(pilot, lambda: "history unavailable" in screen.problem, "the failure")
        assert screen.is_current


async def test_from_a_detail_view_the_history_is_that_flows() -> None:
    app = _app()
    async with app.run_test(size=SIZE) as pilot:
        backend = app.backend
        assert isinstance(backend, ReplayBackend)
        await until(pilot, backend.replayed.is_set, "the replay")
        app.open_detail(ECHO_ID)
        await pilot.pause()
        await pilot.press("h")
        await until(pilot, lambda: isinstance(app.screen, HistoryScreen), "history")
        screen = app.screen
        assert isinstance(screen, HistoryScreen)
        await until(pilot, lambda: bool(screen.rows), "rows")
        assert {r.container_id for r in screen.rows} == {ECHO_ID}
        assert screen.current_filter == HistoryFilter(container_id=ECHO_ID)
