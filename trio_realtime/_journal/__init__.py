"""The client journal (PROTOCOL.md section 7): a pure record format, its file I/O, and the async
journal with group commit that the outbox writes through.

The segment-log API below is what other local logs (``trio_realtime.queue``) build on; they use
only the names exported here, never the private modules:

* a directory and its lock: :func:`acquire_lock` (creates the directory, raises
  :class:`~trio_realtime.JournalLocked`), :func:`release_lock`, :func:`is_lock_held` (is its
  holder still running?), :func:`fsync_dir`;
* writing a log: :func:`create_segment_log` returns a :class:`SegmentWriter`, fed with
  :func:`encode_append` bytes;
* reading one: :func:`list_segments`, then :func:`scan_segment` over each file's bytes (a
  :class:`ScanResult` of records up to the first :class:`Damage`);
* ack logs (which seqs of which stream a consumer acknowledged): :class:`StreamAck`,
  :class:`StreamWatermark` and :class:`StreamForgotten` records, written with
  :func:`encode_ack_record` (appending) or :func:`write_ack_log` (a compacted file) and read
  with :func:`read_ack_log`.

Every file is a segment: :data:`SEGMENT_HEADER`, then records (see ``_format.py``).
"""

from ._files import Recovery as Recovery
from ._files import SegmentWriter as SegmentWriter
from ._files import acquire_lock as acquire_lock
from ._files import create_segment_log as create_segment_log
from ._files import fsync_dir as fsync_dir
from ._files import is_lock_held as is_lock_held
from ._files import list_segments as list_segments
from ._files import read_ack_log as read_ack_log
from ._files import recover as recover
from ._files import release_lock as release_lock
from ._files import write_ack_log as write_ack_log
from ._format import HEADER as SEGMENT_HEADER
from ._format import AckLogRecord as AckLogRecord
from ._format import AckMark as AckMark
from ._format import Append as Append
from ._format import Checkpoint as Checkpoint
from ._format import CursorMark as CursorMark
from ._format import Damage as Damage
from ._format import Record as Record
from ._format import ScanResult as ScanResult
from ._format import StreamAck as StreamAck
from ._format import StreamForgotten as StreamForgotten
from ._format import StreamWatermark as StreamWatermark
from ._format import Withdraw as Withdraw
from ._format import encode_ack_record as encode_ack_record
from ._format import encode_append as encode_append
from ._format import scan as scan_segment
from ._journal import Cursor as Cursor
from ._journal import Durability as Durability
from ._journal import Journal as Journal
from ._journal import JournalEntry as JournalEntry
from ._journal import Withdrawals as Withdrawals
from ._journal import open_journal as open_journal

__all__ = [
    "SEGMENT_HEADER",
    "AckLogRecord",
    "AckMark",
    "Append",
    "Checkpoint",
    "Cursor",
    "CursorMark",
    "Damage",
    "Durability",
    "Journal",
    "JournalEntry",
    "Record",
    "Recovery",
    "ScanResult",
    "SegmentWriter",
    "StreamAck",
    "StreamForgotten",
    "StreamWatermark",
    "Withdraw",
    "Withdrawals",
    "acquire_lock",
    "create_segment_log",
    "encode_ack_record",
    "encode_append",
    "fsync_dir",
    "is_lock_held",
    "list_segments",
    "open_journal",
    "read_ack_log",
    "recover",
    "release_lock",
    "scan_segment",
    "write_ack_log",
]
