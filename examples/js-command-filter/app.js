// A WebSocket message filter in JavaScript (componentize-js, world `message-filter-plugin`): a
// JSON command allow-list.
//
// Every text message a client sends must be a JSON object whose command field names one of the
// allowed commands, e.g. {"command": "subscribe", "topic": "prices"}. Anything else closes the
// session, on both sides, with 1008 (policy violation) and the reason:
//
//   message is not JSON | message is not a JSON object | no "command" string in the message |
//   unknown command "..." | binary messages are not allowed
//
// Configuration (JSON):
//
//   { "commands": ["subscribe", "unsubscribe", "ping"],
//     "field": "command",
//     "directions": ["to-server"],
//     "allow_binary": false }
//
// - `commands` (required, at least one): the allowed values of the field, compared exactly.
// - `field`: the name of the field holding the command (default "command").
// - `directions`: which messages are checked: "to-server" (what clients send, the default) and/or
//   "to-client" (what the backend sends). Others are forwarded untouched.
// - `allow_binary`: forward binary messages unchecked instead of closing (default false).
//
// The filter keeps no session state: each message is judged on its own.
//
// Build: see package.json (`npm run build`).

import { log } from 'wasmgate:plugin/host@0.1.2';

const POLICY_VIOLATION = 1008;
// RFC 6455 §5.5: a Close frame's payload is at most 125 bytes, 2 of them the code.
const MAX_REASON_BYTES = 123;

const DIRECTIONS = ['to-server', 'to-client'];

let config = {
  commands: new Set(),
  field: 'command',
  directions: new Set(['to-server']),
  allowBinary: false,
};

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: false });

const FORWARD = { actions: [{ tag: 'forward' }], state: undefined };

function invalid(field, why) {
  return `invalid config: ${field}: ${why}`;
}

// `reason`, cut (at a character boundary, marked with "...") to fit in a Close frame.
function fitReason(reason) {
  if (encoder.encode(reason).length <= MAX_REASON_BYTES) {
    return reason;
  }
  let out = '';
  let bytes = 0;
  for (const c of reason) {
    const n = encoder.encode(c).length;
    if (bytes + n > MAX_REASON_BYTES - 3) {
      break;
    }
    out += c;
    bytes += n;
  }
  return `${out}...`;
}

function close(reason) {
  const fitted = fitReason(reason);
  log('debug', `closing a session: ${fitted}`);
  return {
    actions: [{ tag: 'close', val: { code: POLICY_VIOLATION, reason: fitted } }],
    state: undefined,
  };
}

// Why `payload` (a text message) breaks the policy, or undefined when it is allowed.
function violation(payload) {
  let parsed;
  try {
    parsed = JSON.parse(decoder.decode(payload));
  } catch {
    return 'message is not JSON';
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    return 'message is not a JSON object';
  }
  const command = parsed[config.field];
  if (typeof command !== 'string') {
    return `no ${JSON.stringify(config.field)} string in the message`;
  }
  if (!config.commands.has(command)) {
    return `unknown command ${JSON.stringify(command)}`;
  }
  return undefined;
}

export const lifecycle = {
  init(text) {
    let parsed;
    try {
      parsed = JSON.parse(text || '{}');
    } catch (e) {
      throw `invalid config: ${e.message}`;
    }
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
      throw invalid('config', 'a JSON object is required');
    }
    const { commands, field = 'command', directions = ['to-server'], allow_binary = false } = parsed;
    if (!Array.isArray(commands) || commands.length === 0) {
      throw invalid('commands', 'a non-empty list of strings is required');
    }
    commands.forEach((c, i) => {
      if (typeof c !== 'string' || c === '') {
        throw invalid(`commands[${i}]`, 'a non-empty string is required');
      }
    });
    if (typeof field !== 'string' || field === '') {
      throw invalid('field', 'a non-empty string is required');
    }
    if (!Array.isArray(directions) || directions.length === 0) {
      throw invalid('directions', 'a non-empty list of "to-server" and "to-client" is required');
    }
    directions.forEach((d, i) => {
      if (!DIRECTIONS.includes(d)) {
        throw invalid(`directions[${i}]`, `"to-server" or "to-client" is required, not ${JSON.stringify(d)}`);
      }
    });
    if (typeof allow_binary !== 'boolean') {
      throw invalid('allow_binary', 'true or false is required');
    }
    config = {
      commands: new Set(commands),
      field,
      directions: new Set(directions),
      allowBinary: allow_binary,
    };
    log('info', `${config.commands.size} commands allowed in "${field}", checking ${directions.join(', ')}`);
  },
};

export const messageFilter = {
  onOpen(_session) {
    return { tag: 'accept', val: { subprotocol: undefined, state: new Uint8Array() } };
  },

  onMessage(message, _state) {
    if (!config.directions.has(message.direction)) {
      return FORWARD;
    }
    if (message.opcode === 'binary') {
      return config.allowBinary ? FORWARD : close('binary messages are not allowed');
    }
    const why = violation(message.payload);
    return why === undefined ? FORWARD : close(why);
  },

  onClose(_close, _state) {},
};
