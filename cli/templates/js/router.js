// The {{name}} router (componentize-js, world `router-plugin`).
//
// Requests with `x-beta: 1` go to the beta pool (named by the plugin's `config` string),
// `/healthz` is answered by the gateway itself, and everything else is left to the gateway's
// native rules. Types generated from wit/plugin.wit are in types/ after `wasmgate plugin build`.

import { log } from 'wasmgate:plugin/host@0.1.2';

const encoder = new TextEncoder();
const decoder = new TextDecoder();
let betaPool = '';

/** The first value of a request header, as text (values arrive as bytes). */
function header(request, name) {
  const h = request.headers.find((h) => h.name === name);
  return h === undefined ? undefined : decoder.decode(h.value).trim();
}

export const lifecycle = {
  init(config) {
    if (config.trim() === '') {
      throw 'config: the name of the beta pool is required';
    }
    betaPool = config.trim();
    log('info', `beta traffic goes to pool ${betaPool}`);
  },
};

export const router = {
  route(request) {
    if (request.path === '/healthz') {
      return {
        tag: 'respond',
        val: {
          status: 200,
          headers: [{ name: 'content-type', value: encoder.encode('text/plain') }],
          body: encoder.encode('ok\n'),
        },
      };
    }
    if (header(request, 'x-beta') === '1') {
      return {
        tag: 'forward',
        val: {
          pool: betaPool,
          settings: 'web',
          server: undefined,
          headerEdits: [{ tag: 'set', val: { name: 'x-routed-by', value: encoder.encode('{{name}}') } }],
          path: undefined,
        },
      };
    }
    return { tag: 'defer' };
  },
};
