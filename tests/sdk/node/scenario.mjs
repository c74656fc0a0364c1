// Drives one centrifuge-js client through a scenario and reports every SDK event as one JSON line on
// stdout, so that a test in another language can steer it and check what the SDK saw.
//
// Usage: node scenario.mjs '<scenario JSON>'   (or the scenario as the first line of stdin)
//
// Scenario:
//   url             ws://127.0.0.1:PORT/connection/websocket
//   transports      optional: [{transport: "websocket"|"http_stream"|"sse", endpoint}] tried in order
//                   (centrifuge-js's fallback), with emulation_endpoint for http_stream and SSE
//   protocol        "json" (default) | "protobuf"
//   token           connection token (optional)
//   refresh_tokens  tokens handed out by getToken, in order (the last one is repeated); without it
//                   there is no getToken
//   name, version   sent in the connect request
//   subscriptions   [{channel, token?, refresh_tokens?, recoverable?, positioned?, join_leave?, delta?}] created
//                   (and subscribed) before connecting
//   actions         commands run in order once the client is first connected
//   timeout         seconds after which the script reports {"event":"timeout"} and exits 3 (default 30)
//   frames          true: every WebSocket frame in and out is written to stderr as a JSON line
//   exit_on_eof     false: keep running until the timeout when stdin ends (default true)
//
// Commands (in `actions`, or one JSON object per stdin line after the scenario):
//   {"op":"subscribe","channel":c,"token"?:t,"refresh_tokens"?:[...],"recoverable"?:b,"positioned"?:b,
//    "join_leave"?:b, "delta"?:"fossil"}   {"op":"unsubscribe","channel":c}
//   {"op":"publish","channel":c,"data":d}   {"op":"sleep","ms":n}   {"op":"state"}
//   {"op":"history","channel":c,"limit"?:n,"since"?:{offset,epoch},"reverse"?:b}
//   {"op":"presence","channel":c}   {"op":"presence_stats","channel":c}   {"op":"rpc","method":m,"data":d}
//   {"op":"connect"}   {"op":"disconnect"}   {"op":"exit"}
// Every command with an "id" is acknowledged by {"event":"done","id":...,"result"?:...} (or "failed" with
// the error); history, presence and presence_stats carry their result there:
//   history         {publications: [{data, offset, info}], offset, epoch}
//   presence        {clients: {<client>: {user, client}}}
//   presence_stats  {num_clients, num_users}
// Subscription events carry the stream position: subscribed {recoverable, positioned, was_recovering,
// recovered, offset, epoch}; publication {offset}; join / leave {channel, info, server_side}.
// The script exits by itself at the timeout, on {"op":"exit"} and when stdin ends.

import { createInterface } from 'node:readline';
import { EventSource } from 'eventsource';
import WebSocket from 'ws';

const started = Date.now();

function emit(event, fields = {}) {
  process.stdout.write(JSON.stringify({ event, t: Date.now() - started, ...fields }) + '\n');
}

function logFrame(dir, data, isBinary) {
  const payload = isBinary
    ? { b64: Buffer.from(data).toString('base64') }
    : { text: Buffer.isBuffer(data) ? data.toString('utf8') : String(data) };
  process.stderr.write(JSON.stringify({ frame: dir, t: Date.now() - started, ...payload }) + '\n');
}

function errorFields(error) {
  if (!error) return {};
  return { code: error.code ?? null, message: error.message ?? String(error) };
}

let finished = false;
function finish(code) {
  if (finished) return;
  finished = true;
  emit('exit', { code });
  // Let stdout drain before leaving.
  process.stdout.write('', () => process.exit(code));
  setTimeout(() => process.exit(code), 500).unref();
}

async function readScenario(lines) {
  if (process.argv[2]) return JSON.parse(process.argv[2]);
  const { value, done } = await lines.next();
  if (done) throw new Error('no scenario on argv or stdin');
  return JSON.parse(value);
}

async function main() {
  const input = createInterface({ input: process.stdin, crlfDelay: Infinity });
  const lines = input[Symbol.asyncIterator]();
  const scenario = await readScenario(lines);
  const timeout = Number(scenario.timeout ?? 30);
  setTimeout(() => {
    emit('timeout', { seconds: timeout });
    finish(3);
  }, timeout * 1000).unref();

  const protobuf = scenario.protocol === 'protobuf';
  const { Centrifuge } = await import(protobuf ? 'centrifuge/build/protobuf' : 'centrifuge');

  // Payloads are JSON values in scenarios and events; on protobuf they travel as bytes.
  const encoder = new TextEncoder();
  const decoder = new TextDecoder();
  const encode = (value) => (protobuf ? encoder.encode(JSON.stringify(value)) : value);
  const decode = (data) => {
    if (!protobuf || data === undefined || data === null) return data ?? null;
    const text = decoder.decode(data);
    try {
      return JSON.parse(text);
    } catch {
      return { undecodable: Buffer.from(data).toString('base64') };
    }
  };
  const clientInfo = (info) => (info ? { user: info.user, client: info.client } : null);
  const subscribedFields = (ctx) => ({
    recoverable: Boolean(ctx.recoverable),
    positioned: Boolean(ctx.positioned),
    was_recovering: Boolean(ctx.wasRecovering),
    recovered: Boolean(ctx.recovered),
    offset: ctx.streamPosition ? Number(ctx.streamPosition.offset) : null,
    epoch: ctx.streamPosition ? ctx.streamPosition.epoch : null,
  });
  const offsetOf = (ctx) => (ctx.offset === undefined || ctx.offset === null ? null : Number(ctx.offset));

  let WebSocketClass = WebSocket;
  if (scenario.frames) {
    WebSocketClass = class FrameLoggingWebSocket extends WebSocket {
      constructor(...args) {
        super(...args);
        this.on('message', (data, isBinary) => logFrame('in', data, isBinary));
        this.on('close', (code, reason) =>
          process.stderr.write(JSON.stringify({ frame: 'close', code, reason: String(reason) }) + '\n'),
        );
      }

      send(data, ...rest) {
        logFrame('out', data, typeof data !== 'string');
        return super.send(data, ...rest);
      }
    };
  }

  const tokenSupplier = (tokens, onCall) => {
    if (!Array.isArray(tokens) || tokens.length === 0) return null;
    let calls = 0;
    return async () => {
      const token = tokens[Math.min(calls, tokens.length - 1)];
      calls += 1;
      onCall(calls);
      return token;
    };
  };

  const options = {
    websocket: WebSocketClass,
    name: scenario.name ?? 'js-sdk-test',
    version: scenario.version ?? '',
    timeout: 5000,
    minReconnectDelay: 200,
    maxReconnectDelay: 2000,
  };
  if (scenario.token) options.token = scenario.token;
  const getToken = tokenSupplier(scenario.refresh_tokens, (n) => emit('get_token', { n }));
  if (getToken) options.getToken = getToken;

  if (Array.isArray(scenario.transports)) {
    options.emulationEndpoint = scenario.emulation_endpoint;
    options.eventsource = EventSource;
  }
  const client = new Centrifuge(
    Array.isArray(scenario.transports) ? scenario.transports : scenario.url,
    options,
  );

  client.on('connecting', (ctx) => emit('connecting', { code: ctx.code, reason: ctx.reason }));
  client.on('disconnected', (ctx) => emit('disconnected', { code: ctx.code, reason: ctx.reason }));
  client.on('error', (ctx) => emit('error', { type: ctx.type, ...errorFields(ctx.error) }));
  client.on('subscribed', (ctx) =>
    emit('subscribed', { channel: ctx.channel, server_side: true, ...subscribedFields(ctx) }),
  );
  client.on('subscribing', (ctx) => emit('subscribing', { channel: ctx.channel, server_side: true }));
  client.on('unsubscribed', (ctx) => emit('unsubscribed', { channel: ctx.channel, server_side: true }));
  client.on('publication', (ctx) =>
    emit('publication', {
      channel: ctx.channel,
      data: decode(ctx.data),
      info: clientInfo(ctx.info),
      offset: offsetOf(ctx),
      server_side: true,
    }),
  );
  client.on('join', (ctx) =>
    emit('join', { channel: ctx.channel, info: clientInfo(ctx.info), server_side: true }),
  );
  client.on('leave', (ctx) =>
    emit('leave', { channel: ctx.channel, info: clientInfo(ctx.info), server_side: true }),
  );

  const newSubscription = (spec) => {
    const subOptions = {};
    if (spec.token) subOptions.token = spec.token;
    const subGetToken = tokenSupplier(spec.refresh_tokens, (n) =>
      emit('sub_get_token', { channel: spec.channel, n }),
    );
    if (subGetToken) subOptions.getToken = subGetToken;
    if (spec.recoverable) subOptions.recoverable = true;
    if (spec.positioned) subOptions.positioned = true;
    if (spec.join_leave) subOptions.joinLeave = true;
    if (spec.delta) subOptions.delta = spec.delta;
    if (spec.get_state) {
      // The app's state: here the channel's current stream position, read from the server API.
      let calls = 0;
      subOptions.getState = async () => {
        calls += 1;
        emit('get_state', { channel: spec.channel, n: calls });
        const response = await fetch(`${spec.get_state.api}/history`, {
          method: 'POST',
          headers: { 'X-API-Key': spec.get_state.key, 'Content-Type': 'application/json' },
          body: JSON.stringify({ channel: spec.channel, limit: 0 }),
        });
        const { result } = await response.json();
        return { offset: Number(result.offset ?? 0), epoch: result.epoch ?? '' };
      };
    }
    const sub = client.newSubscription(spec.channel, subOptions);
    sub.on('subscribing', (ctx) =>
      emit('subscribing', { channel: spec.channel, code: ctx.code, reason: ctx.reason, server_side: false }),
    );
    sub.on('subscribed', (ctx) =>
      emit('subscribed', { channel: ctx.channel, server_side: false, ...subscribedFields(ctx) }),
    );
    sub.on('unsubscribed', (ctx) =>
      emit('unsubscribed', { channel: ctx.channel, code: ctx.code, reason: ctx.reason, server_side: false }),
    );
    sub.on('publication', (ctx) =>
      emit('publication', {
        channel: ctx.channel,
        data: decode(ctx.data),
        info: clientInfo(ctx.info),
        offset: offsetOf(ctx),
        server_side: false,
      }),
    );
    sub.on('join', (ctx) =>
      emit('join', { channel: spec.channel, info: clientInfo(ctx.info), server_side: false }),
    );
    sub.on('leave', (ctx) =>
      emit('leave', { channel: spec.channel, info: clientInfo(ctx.info), server_side: false }),
    );
    sub.on('error', (ctx) =>
      emit('sub_error', { channel: ctx.channel, type: ctx.type, ...errorFields(ctx.error) }),
    );
    sub.subscribe();
    return sub;
  };

  const run = async (command) => {
    switch (command.op) {
      case 'subscribe': {
        const existing = client.getSubscription(command.channel);
        if (existing) existing.subscribe();
        else newSubscription(command);
        return;
      }
      case 'unsubscribe': {
        const sub = client.getSubscription(command.channel);
        if (!sub) throw new Error(`no subscription to ${command.channel}`);
        sub.unsubscribe();
        client.removeSubscription(sub);
        return;
      }
      case 'publish':
        await client.publish(command.channel, encode(command.data));
        return;
      case 'rpc': {
        const result = await client.rpc(command.method, encode(command.data));
        return { data: decode(result.data) };
      }
      case 'history': {
        const historyOptions = {};
        if (command.limit !== undefined) historyOptions.limit = command.limit;
        if (command.since) historyOptions.since = command.since;
        if (command.reverse) historyOptions.reverse = true;
        const result = await client.history(command.channel, historyOptions);
        return {
          publications: result.publications.map((pub) => ({
            data: decode(pub.data),
            offset: offsetOf(pub),
            info: clientInfo(pub.info),
          })),
          offset: Number(result.offset),
          epoch: result.epoch,
        };
      }
      case 'presence': {
        const result = await client.presence(command.channel);
        const clients = {};
        for (const [id, info] of Object.entries(result.clients ?? {})) clients[id] = clientInfo(info);
        return { clients };
      }
      case 'presence_stats': {
        const result = await client.presenceStats(command.channel);
        return { num_clients: Number(result.numClients ?? 0), num_users: Number(result.numUsers ?? 0) };
      }
      case 'sleep':
        await new Promise((resolve) => setTimeout(resolve, Number(command.ms ?? 0)));
        return;
      case 'state': {
        const subs = {};
        for (const [channel, sub] of Object.entries(client.subscriptions())) subs[channel] = sub.state;
        emit('state', { state: client.state, subscriptions: subs });
        return;
      }
      case 'connect':
        client.connect();
        return;
      case 'disconnect':
        client.disconnect();
        return;
      case 'exit':
        client.disconnect();
        finish(0);
        return;
      default:
        throw new Error(`unknown op ${JSON.stringify(command.op)}`);
    }
  };

  const runReported = async (command) => {
    try {
      const result = await run(command);
      if (command.id !== undefined) {
        emit('done', { id: command.id, op: command.op, ...(result === undefined ? {} : { result }) });
      }
    } catch (error) {
      emit('failed', { id: command.id ?? null, op: command.op, ...errorFields(error) });
    }
  };

  // Commands from stdin and from `actions` run one at a time, in arrival order.
  let queue = Promise.resolve();
  const enqueue = (command) => {
    queue = queue.then(() => runReported(command));
  };

  let firstConnect = true;
  client.on('connected', (ctx) => {
    emit('connected', { client: ctx.client, transport: ctx.transport });
    if (firstConnect) {
      firstConnect = false;
      for (const action of scenario.actions ?? []) enqueue(action);
    }
  });

  for (const spec of scenario.subscriptions ?? []) newSubscription(spec);
  emit('started', { protocol: protobuf ? 'protobuf' : 'json' });
  client.connect();

  for (;;) {
    const { value, done } = await lines.next();
    if (done) break;
    const line = value.trim();
    if (!line) continue;
    try {
      enqueue(JSON.parse(line));
    } catch (error) {
      emit('failed', { op: null, message: `bad command line: ${error.message}` });
    }
  }
  // stdin ended: whoever drove the scenario is gone (unless told to keep going until the timeout).
  await queue;
  if (scenario.exit_on_eof === false) return;
  client.disconnect();
  finish(0);
}

main().catch((error) => {
  emit('fatal', { message: error?.stack ?? String(error) });
  finish(2);
});
