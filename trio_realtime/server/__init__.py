"""The trio_realtime reference server (``trio-realtime serve``) and its Python API."""

from ._auth import Action as Action
from ._auth import AllowAll as AllowAll
from ._auth import Authenticator as Authenticator
from ._auth import HmacAuthenticator as HmacAuthenticator
from ._auth import Identity as Identity
from ._auth import load_or_create_secret as load_or_create_secret
from ._auth import make_token as make_token
from ._config import ServerConfig as ServerConfig
from ._engine import RealtimeServer as RealtimeServer
from ._registry import register_store as register_store
from ._registry import store_from_url as store_from_url
from ._sqlite import SqliteStore as SqliteStore
from ._store import Append as Append
from ._store import ChannelInfo as ChannelInfo
from ._store import ClientRow as ClientRow
from ._store import ClientUpdate as ClientUpdate
from ._store import MemoryStore as MemoryStore
from ._store import Snapshot as Snapshot
from ._store import Store as Store
from ._store import StoreConflict as StoreConflict
from ._store import StoredEvent as StoredEvent
from ._store import WriteBatch as WriteBatch
from ._websocket import open_server as open_server
from ._websocket import serve as serve
