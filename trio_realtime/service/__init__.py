"""Long-running named services: :class:`ServiceConfig` with workload :data:`PROFILES`, services
files in TOML (:func:`load_services`), plugins (:class:`Plugin`, :class:`BasePlugin`,
:class:`EventPlugin`, found by entry point), handlers (:class:`ServiceHandlers`), and
:func:`run_services`, which runs several side by side in one process
(``trio-realtime run services.toml``)."""

from ._config import PROFILES as PROFILES
from ._config import ServiceConfig as ServiceConfig
from ._config import load_services as load_services
from ._handlers import AuthHandler as AuthHandler
from ._handlers import DesktopNotifications as DesktopNotifications
from ._handlers import ErrorHandler as ErrorHandler
from ._handlers import FileStorage as FileStorage
from ._handlers import HeartbeatHandler as HeartbeatHandler
from ._handlers import LifecycleHandler as LifecycleHandler
from ._handlers import LogErrors as LogErrors
from ._handlers import LogNotifications as LogNotifications
from ._handlers import MessageHandler as MessageHandler
from ._handlers import NotificationHandler as NotificationHandler
from ._handlers import ServiceHandlers as ServiceHandlers
from ._handlers import ServiceStorage as ServiceStorage
from ._plugins import ENTRY_POINT_GROUP as ENTRY_POINT_GROUP
from ._plugins import BasePlugin as BasePlugin
from ._plugins import EventPlugin as EventPlugin
from ._plugins import Plugin as Plugin
from ._plugins import load_plugin as load_plugin
from ._run import Service as Service
from ._run import ServiceContext as ServiceContext
from ._run import ServiceFailed as ServiceFailed
from ._run import ServiceTagFilter as ServiceTagFilter
from ._run import check_services as check_services
from ._run import run_services as run_services
