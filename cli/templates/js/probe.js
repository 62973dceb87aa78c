// The {{name}} probe evaluator (componentize-js, world `probe-plugin`).
//
// A server is healthy when it answers 200-399 and its body does not contain the marker given as
// the plugin's `config` string (default "maintenance"), a page many applications serve with 200
// while they are being updated.

const decoder = new TextDecoder();
let marker = 'maintenance';

export const lifecycle = {
  init(config) {
    if (config.trim() !== '') {
      marker = config.trim();
    }
  },
};

export const probeEvaluator = {
  shapeRequest(pool, settings, server) {
    return undefined;
  },
  evaluate(response) {
    if (response.status === undefined) {
      return { healthy: false, reason: response.error ?? 'no response' };
    }
    if (response.status < 200 || response.status > 399) {
      return { healthy: false, reason: `status ${response.status}` };
    }
    if (decoder.decode(response.body).includes(marker)) {
      return { healthy: false, reason: `the body says "${marker}"` };
    }
    return { healthy: true, reason: `status ${response.status}` };
  },
};
