#!/usr/bin/env node
// A Socket.IO 4.8 server to test a Socket.IO client transport against (see SOCKETIO.md).
//
//   node examples/socketio_server.js [--port N] [--no-recovery] [--token T] [--log FILE]
//                                    [--ping-interval MS] [--ping-timeout MS]
//
// Install its one dependency first: `npm ci --prefix examples`.
//
// Prints exactly one line, `listening on <port>`, once it accepts connections (--port 0: the port
// the OS picked), then serves on 127.0.0.1 until SIGTERM or SIGINT. Namespaces "/" and "/chat"
// behave the same:
//
// * --token T: a connection whose auth is not {"token": T} is refused ("unauthorized").
// * An event with an ack: one JSON line is appended to the --log file (before the ack, with
//   fs.appendFileSync, so a SIGKILL right after the ack cannot lose it):
//     {"ns", "event", "args", "key": args[0].idempotency_key or null, "duplicate"}
//   Buffers anywhere in args are logged as {"_binary_base64": "..."}. A key is a duplicate when
//   this process saw it before (in any namespace) or it is in the log file at startup. The ack is
//   {"ok": true, "duplicate": <bool>}; a first occurrence is then broadcast to the whole namespace,
//   the sender included. An event without an ack is broadcast, not logged.
// * "__emit" {"event", "args", "count"}: the namespace is sent `event` count times (default 1),
//   with args (default []) followed by {"i": k}, k = 0..count-1; then the ack {"ok": true}.
// * "__drop": the ack {"ok": true}, then, once it is written, the socket's TCP connection is
//   destroyed (no WebSocket close frame), so the server keeps the session for recovery.
// Control events are neither logged nor broadcast.
//
// Connection state recovery is on (2 minutes, middlewares skipped) unless --no-recovery: every
// broadcast then carries its offset as a last argument, and a client that comes back with
// {"pid", "offset"} in its auth gets the same sid and pid and the packets it missed. Note that
// socket.io 4.8 writes those missed packets BEFORE the CONNECT packet that answers the reconnect.
"use strict";

const fs = require("node:fs");
const http = require("node:http");
const { Server } = require("socket.io");

const USAGE =
  "usage: node socketio_server.js [--port N] [--no-recovery] [--token T] [--log FILE]" +
  " [--ping-interval MS] [--ping-timeout MS]";

function fail(message) {
  process.stderr.write(`${message}\n${USAGE}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const opts = {
    port: 3000,
    recovery: true,
    token: null,
    log: null,
    pingInterval: 25000,
    pingTimeout: 20000,
  };
  const integer = (name, value) => {
    if (value === undefined || !/^\d+$/.test(value)) fail(`${name} needs a number`);
    return Number(value);
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--port") opts.port = integer(arg, argv[++i]);
    else if (arg === "--no-recovery") opts.recovery = false;
    else if (arg === "--token") {
      opts.token = argv[++i];
      if (opts.token === undefined) fail("--token needs a value");
    } else if (arg === "--log") {
      opts.log = argv[++i];
      if (opts.log === undefined) fail("--log needs a file");
    } else if (arg === "--ping-interval") opts.pingInterval = integer(arg, argv[++i]);
    else if (arg === "--ping-timeout") opts.pingTimeout = integer(arg, argv[++i]);
    else if (arg === "-h" || arg === "--help") {
      process.stdout.write(`${USAGE}\n`);
      process.exit(0);
    } else fail(`unknown argument: ${arg}`);
  }
  if (opts.port > 65535) fail("--port must be 0..65535");
  return opts;
}

// Keys already in the log file: a restarted server still flags them as duplicates. A torn last
// line (a SIGKILL during a write) is skipped.
function keysInLog(path) {
  const keys = new Set();
  let text;
  try {
    text = fs.readFileSync(path, "utf8");
  } catch (err) {
    if (err.code === "ENOENT") return keys;
    throw err;
  }
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    try {
      const entry = JSON.parse(line);
      if (entry.key !== null && entry.key !== undefined) keys.add(JSON.stringify(entry.key));
    } catch {
      // not a whole line
    }
  }
  return keys;
}

function idempotencyKey(args) {
  const first = args[0];
  if (first !== null && typeof first === "object" && !Array.isArray(first) && !Buffer.isBuffer(first)) {
    if (Object.hasOwn(first, "idempotency_key")) return first.idempotency_key;
  }
  return null;
}

// JSON for the log: binary (Buffer, ArrayBuffer, typed arrays) becomes {"_binary_base64": ...}.
function loggable(value) {
  if (Buffer.isBuffer(value)) return { _binary_base64: value.toString("base64") };
  if (value instanceof ArrayBuffer) return { _binary_base64: Buffer.from(value).toString("base64") };
  if (ArrayBuffer.isView(value)) {
    return {
      _binary_base64: Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString("base64"),
    };
  }
  if (Array.isArray(value)) return value.map(loggable);
  if (value !== null && typeof value === "object") {
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = loggable(v);
    return out;
  }
  return value;
}

// Calls fn once everything queued for this Engine.IO connection (the ack just sent included) has
// been written to the TCP socket, or after a second at most.
function whenWritten(conn, fn) {
  const transport = conn.transport;
  let done = false;
  const finish = () => {
    if (done) return;
    done = true;
    transport.off("ready", check);
    clearTimeout(timer);
    fn();
  };
  // "ready" comes after a write's callback; Engine.IO flushes whatever it queued meanwhile first.
  function check() {
    if (transport.writable && conn.writeBuffer.length === 0) finish();
  }
  const timer = setTimeout(finish, 1000);
  transport.on("ready", check);
  check();
}

function dropLink(socket) {
  const conn = socket.conn;
  const raw = conn.transport && conn.transport.name === "websocket" ? conn.transport.socket : null;
  if (raw && typeof raw.terminate === "function") raw.terminate();
  else conn.close(); // HTTP long-polling: Engine.IO's own close is the nearest thing
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  const seen = opts.log ? keysInLog(opts.log) : new Set();

  const httpServer = http.createServer();
  const io = new Server(httpServer, {
    pingInterval: opts.pingInterval,
    pingTimeout: opts.pingTimeout,
    connectionStateRecovery: opts.recovery
      ? { maxDisconnectionDuration: 2 * 60 * 1000, skipMiddlewares: true }
      : undefined,
    maxHttpBufferSize: 16 * 1024 * 1024, // the relay carries the transport kit's 4 MiB messages
  });

  const record = (nsp, event, args) => {
    const key = idempotencyKey(args);
    const duplicate = key !== null && seen.has(JSON.stringify(key));
    if (key !== null) seen.add(JSON.stringify(key));
    if (opts.log) {
      const line = JSON.stringify({ ns: nsp.name, event, args: loggable(args), key, duplicate });
      fs.appendFileSync(opts.log, `${line}\n`);
    }
    return duplicate;
  };

  const broadcast = (nsp, event, args) => {
    try {
      nsp.emit(event, ...args);
    } catch (err) {
      // e.g. a reserved event name ("connect", "disconnect", ...)
      process.stderr.write(`cannot broadcast ${JSON.stringify(event)}: ${err.message}\n`);
    }
  };

  const setUp = (nsp) => {
    if (opts.token !== null) {
      nsp.use((socket, next) => {
        const auth = socket.handshake.auth;
        if (auth && auth.token === opts.token) next();
        else next(new Error("unauthorized"));
      });
    }
    nsp.on("connection", (socket) => {
      socket.onAny((event, ...args) => {
        const ack = typeof args[args.length - 1] === "function" ? args.pop() : null;
        if (event === "__emit") {
          const spec = args[0] !== null && typeof args[0] === "object" ? args[0] : {};
          const extra = Array.isArray(spec.args) ? spec.args : [];
          const count = Number.isInteger(spec.count) && spec.count >= 0 ? spec.count : 1;
          for (let k = 0; k < count; k++) broadcast(nsp, String(spec.event), [...extra, { i: k }]);
          if (ack) ack({ ok: true });
        } else if (event === "__drop") {
          if (ack) ack({ ok: true });
          whenWritten(socket.conn, () => dropLink(socket));
        } else if (ack) {
          const duplicate = record(nsp, event, args);
          ack({ ok: true, duplicate });
          if (!duplicate) broadcast(nsp, event, args);
        } else {
          broadcast(nsp, event, args);
        }
      });
    });
  };
  setUp(io.of("/"));
  setUp(io.of("/chat"));

  // /relay: two clients with the same auth.room talk through the server, as over one link:
  // "message" and "close" events go to the other members of the room, and a member that
  // disconnects is "gone" for them. (How the client's Socket.IO link is held to the transport
  // contract, trio_realtime.testing.check_transport: tests/socketio/test_conformance.py.)
  io.of("/relay").on("connection", (socket) => {
    const room = String((socket.handshake.auth || {}).room || "");
    socket.join(room);
    socket.on("message", (...args) => socket.to(room).emit("message", ...args));
    socket.on("close", (info) => socket.to(room).emit("close", info));
    socket.on("disconnect", () => socket.to(room).emit("gone"));
  });

  httpServer.on("error", (err) => {
    process.stderr.write(`cannot listen on port ${opts.port}: ${err.message}\n`);
    process.exit(1);
  });
  httpServer.listen(opts.port, "127.0.0.1", () => {
    process.stdout.write(`listening on ${httpServer.address().port}\n`);
  });

  const stop = () => process.exit(0);
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main();
