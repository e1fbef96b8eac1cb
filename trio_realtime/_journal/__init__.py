"""The client journal (PROTOCOL.md section 7): a pure record format, its file I/O, and the async
journal with group commit that the outbox writes through."""

from ._files import Recovery as Recovery
from ._files import recover as recover
from ._format import AckMark as AckMark
from ._format import Append as Append
from ._format import Checkpoint as Checkpoint
from ._format import CursorMark as CursorMark
from ._format import Record as Record
from ._journal import Cursor as Cursor
from ._journal import Durability as Durability
from ._journal import Journal as Journal
from ._journal import JournalEntry as JournalEntry
from ._journal import open_journal as open_journal
