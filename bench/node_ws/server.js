// Node.js `ws` beside Switchboard in the scale ladder (bench/scale_ladder.py): the same job as
// bench/ceiling_server.py, written the way a Node application would write it with `ws`.
//
// * WebSocket port: the upgrade's query names the connection's channels (`/ws?channels=a,b`);
//   anything a client sends afterwards is read and dropped.
// * Control port: one JSON object per line, answered with one line once every send has been handed to
//   `ws`: `{"channels": [...], "n": 10, "t": 1.5, "b": 7}` sends `n` messages per channel to its
//   sockets, one `ws.send` each (there is no coalescing in `ws`'s API), every one a 100-byte text
//   payload carrying `t`, `b` and its index; `{"stats": true}` answers the connection count and RSS.
//
// Prints `{"event": "ready", "pid", "port", "control_port"}` on stdout; stops on SIGTERM or SIGINT.
"use strict";

const net = require("net");
const { WebSocketServer } = require("ws");

const PAYLOAD_SIZE = 100;
const channels = new Map();
let connections = 0;

function payloadFor(t, burst, index, channel) {
  const text = JSON.stringify({ t, b: burst, i: index, c: channel });
  return text.padEnd(PAYLOAD_SIZE, " ");
}

const wss = new WebSocketServer({ port: 0, host: "127.0.0.1", perMessageDeflate: false, clientTracking: false });

wss.on("connection", (ws, request) => {
  const query = new URL(request.url, "http://127.0.0.1").searchParams.get("channels");
  const joined = query ? query.split(",") : [];
  connections += 1;
  for (const name of joined) {
    let members = channels.get(name);
    if (members === undefined) {
      members = new Set();
      channels.set(name, members);
    }
    members.add(ws);
  }
  ws.on("error", () => {});
  ws.on("close", () => {
    connections -= 1;
    for (const name of joined) {
      const members = channels.get(name);
      if (members !== undefined) members.delete(ws);
    }
  });
});

function burst(command) {
  let sends = 0;
  for (const name of command.channels) {
    const members = channels.get(name);
    if (members === undefined) continue;
    for (let i = 0; i < command.n; i += 1) {
      const payload = payloadFor(command.t, command.b, i, name);
      for (const ws of members) ws.send(payload);
      sends += members.size;
    }
  }
  return sends;
}

const control = net.createServer((socket) => {
  socket.setNoDelay(true);
  let buffer = "";
  socket.on("data", (chunk) => {
    buffer += chunk.toString("utf8");
    let end;
    while ((end = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, end);
      buffer = buffer.slice(end + 1);
      let answer;
      try {
        const command = JSON.parse(line);
        if (command.stats) {
          answer = { connections, rss: process.memoryUsage().rss };
        } else {
          answer = { writes: burst(command) };
        }
      } catch (error) {
        answer = { error: String(error) };
      }
      socket.write(JSON.stringify(answer) + "\n");
    }
  });
  socket.on("error", () => {});
});

control.listen(0, "127.0.0.1", () => {
  wss.on("listening", ready);
  if (wss.address()) ready();
});

let announced = false;
function ready() {
  if (announced) return;
  announced = true;
  const line = { event: "ready", pid: process.pid, port: wss.address().port, control_port: control.address().port };
  process.stdout.write(JSON.stringify(line) + "\n");
}

function stop() {
  control.close();
  wss.close();
  process.exit(0);
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
