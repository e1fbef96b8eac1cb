"""trio_realtime: durable realtime messaging for trio."""

from ._config import DeliveryStrategy as DeliveryStrategy
from ._config import OutboxFullPolicy as OutboxFullPolicy
from ._config import RealtimeConfig as RealtimeConfig
from ._errors import ConfigError as ConfigError
from ._errors import JournalBroken as JournalBroken
from ._errors import JournalClosed as JournalClosed
from ._errors import JournalCorrupt as JournalCorrupt
from ._errors import JournalError as JournalError
from ._errors import JournalLocked as JournalLocked
from ._errors import LocalProtocolError as LocalProtocolError
from ._errors import ProtocolError as ProtocolError
from ._errors import RealtimeBrokenError as RealtimeBrokenError
from ._errors import RealtimeClosedError as RealtimeClosedError
from ._errors import RealtimeError as RealtimeError
from ._journal import Durability as Durability
from ._version import __version__ as __version__
