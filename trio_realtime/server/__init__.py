"""The trio_realtime reference server (``trio-realtime serve``) and its Python API."""

from ._app import RealtimeServer as RealtimeServer
from ._app import ServerConfig as ServerConfig
from ._app import open_server as open_server
from ._app import serve as serve
from ._auth import Action as Action
from ._auth import AllowAll as AllowAll
from ._auth import Authenticator as Authenticator
from ._auth import HmacAuthenticator as HmacAuthenticator
from ._auth import Identity as Identity
from ._auth import load_or_create_secret as load_or_create_secret
from ._auth import make_token as make_token
from ._sqlite import SqliteStore as SqliteStore
from ._store import MemoryStore as MemoryStore
from ._store import Store as Store
