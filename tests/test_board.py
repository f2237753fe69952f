"""The completion board: two mappings of one shared memory file see each other's marks."""

from __future__ import annotations

import pytest

from pyroact._board import SLOTS, CompletionBoard, boards_supported

pytestmark = pytest.mark.skipif(not boards_supported(), reason="no memfd_create here")


@pytest.fixture
def boards() -> tuple[CompletionBoard, CompletionBoard]:
    parent = CompletionBoard.create()
    worker = CompletionBoard(parent.fd)  # what the worker maps from the passed descriptor
    yield parent, worker
    worker.close()
    parent.close()


def test_a_mark_in_one_mapping_is_seen_in_the_other(
    boards: tuple[CompletionBoard, CompletionBoard],
) -> None:
    parent, worker = boards
    assert not parent.is_marked(7) and parent.marked == 0
    worker.mark(7)
    worker.mark(8)
    assert parent.is_marked(7) and parent.is_marked(8) and not parent.is_marked(9)
    assert parent.marked == 2


def test_a_slot_holds_the_latest_call_id_that_maps_to_it(
    boards: tuple[CompletionBoard, CompletionBoard],
) -> None:
    parent, worker = boards
    worker.mark(5)
    worker.mark(5 + SLOTS)
    assert parent.is_marked(5 + SLOTS) and not parent.is_marked(5)
    worker.mark(0xFFFFFFFF)  # the largest call id
    assert parent.is_marked(0xFFFFFFFF)


def test_a_closed_board_answers_without_failing(
    boards: tuple[CompletionBoard, CompletionBoard],
) -> None:
    parent, worker = boards
    worker.mark(3)
    parent.close()
    parent.close()  # idempotent
    assert not parent.is_marked(3)
    assert parent.marked == 1  # the count when it was closed
    assert worker.is_marked(3)  # the other mapping is unaffected
