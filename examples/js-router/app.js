// A router plugin in JavaScript (componentize-js, world `router-plugin`).
//
// Configuration (JSON):
//
//   { "versions": { "2": { "pool": "v2", "settings": "web" } },
//     "blocked_prefixes": ["/internal/"],
//     "redirects": { "/old": "/new" } }
//
// - A path starting with one of `blocked_prefixes` is answered 403.
// - A path in `redirects` is redirected (301).
// - `x-api-version: N` with N in `versions` forwards there, adding `x-routed-by: javascript`.
// - Everything else defers to the gateway's native rules.
//
// Build: see package.json (`npm run build`).

import { log } from 'wasmgate:plugin/host@0.1.2';

let config = { versions: {}, blocked_prefixes: [], redirects: {} };

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function header(request, name) {
  const h = request.headers.find((h) => h.name.toLowerCase() === name);
  return h === undefined ? undefined : decoder.decode(h.value).trim();
}

export const lifecycle = {
  init(text) {
    let parsed;
    try {
      parsed = JSON.parse(text || '{}');
    } catch (e) {
      throw `invalid config: ${e.message}`;
    }
    config = { ...config, ...parsed };
    log('info', `${Object.keys(config.versions).length} API versions`);
  },
};

export const router = {
  route(request) {
    const path = request.path.toLowerCase();
    if (config.blocked_prefixes.some((p) => path.startsWith(p.toLowerCase()))) {
      return {
        tag: 'respond',
        val: {
          status: 403,
          headers: [{ name: 'content-type', value: encoder.encode('text/plain') }],
          body: encoder.encode('forbidden\n'),
        },
      };
    }
    const target = config.redirects[request.path];
    if (target !== undefined) {
      return { tag: 'redirect', val: { status: 301, location: target } };
    }
    const version = header(request, 'x-api-version');
    const backend = version === undefined ? undefined : config.versions[version];
    if (backend !== undefined) {
      return {
        tag: 'forward',
        val: {
          pool: backend.pool,
          settings: backend.settings,
          server: undefined,
          headerEdits: [
            { tag: 'set', val: { name: 'x-routed-by', value: encoder.encode('javascript') } },
          ],
          path: undefined,
        },
      };
    }
    return { tag: 'defer' };
  },
};
