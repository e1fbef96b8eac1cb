"""Sans-I/O core of the trio_realtime wire protocol (PROTOCOL.md).

Frames, codec, close codes and the client/server state machines. Nothing here performs I/O or imports
trio, anyio or trio-websocket (``tests/protocol/test_sans_io.py`` checks it).
"""

from ._client import ClientProtocol as ClientProtocol
from ._close import CloseAction as CloseAction
from ._close import CloseCode as CloseCode
from ._close import ErrorCode as ErrorCode
from ._close import close_action as close_action
from ._close import fatal_close_code as fatal_close_code
from ._codec import TooBigInteger as TooBigInteger
from ._codec import check_payload as check_payload
from ._codec import decode_client_message as decode_client_message
from ._codec import decode_server_message as decode_server_message
from ._codec import encode_batch as encode_batch
from ._codec import encode_frame as encode_frame
from ._codec import encode_upstream as encode_upstream
from ._codec import encode_upstreams as encode_upstreams
from ._codec import join_encoded as join_encoded
from ._codec import renumber_upstream as renumber_upstream
from ._events import DuplicateEvent as DuplicateEvent
from ._events import Gap as Gap
from ._events import OutOfOrderEvent as OutOfOrderEvent
from ._frames import PROTOCOL_VERSION as PROTOCOL_VERSION
from ._frames import Ack as Ack
from ._frames import ChannelPosition as ChannelPosition
from ._frames import ChannelResume as ChannelResume
from ._frames import ClientFrame as ClientFrame
from ._frames import Error as Error
from ._frames import Frame as Frame
from ._frames import Message as Message
from ._frames import Ping as Ping
from ._frames import Pong as Pong
from ._frames import PresenceDiff as PresenceDiff
from ._frames import PresenceMember as PresenceMember
from ._frames import PresenceState as PresenceState
from ._frames import PresenceStatus as PresenceStatus
from ._frames import PresenceUpdate as PresenceUpdate
from ._frames import ReadReceipt as ReadReceipt
from ._frames import Receipts as Receipts
from ._frames import ReceiptsQuery as ReceiptsQuery
from ._frames import Resume as Resume
from ._frames import ResumeResponse as ResumeResponse
from ._frames import ServerFrame as ServerFrame
from ._frames import Subscribe as Subscribe
from ._frames import Subscribed as Subscribed
from ._frames import Typing as Typing
from ._frames import Unsubscribe as Unsubscribe
from ._frames import Unsubscribed as Unsubscribed
from ._frames import UpstreamEvent as UpstreamEvent
from ._kinds import Fields as Fields
from ._kinds import FrameKind as FrameKind
from ._kinds import register_frame_kind as register_frame_kind
from ._server import ServerProtocol as ServerProtocol
from ._session import Answer as Answer
from ._session import Answered as Answered
from ._session import ClientSession as ClientSession
from ._session import MustClose as MustClose
from ._session import Request as Request
from ._session import SendRefused as SendRefused
from ._session import ServerNotice as ServerNotice
from ._session import SessionStarted as SessionStarted
from ._session import SubscriptionStarted as SubscriptionStarted
from ._state import Role as Role
from ._state import State as State
