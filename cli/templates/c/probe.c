// The {{name}} probe evaluator in C (world `probe-plugin`; bindings generated into gen/ by
// `wit-bindgen c`, see gen/{{c_world}}.h for every type).
//
// A server is healthy when it answers 200-399 and its body does not contain the marker given as
// the plugin's `config` string (default "maintenance"), a page many applications serve with 200
// while they are being updated.
//
// Ownership, as wit-bindgen's C bindings define it: the arguments of an exported function
// belong to it (free them), and what it returns is freed by the bindings after the gateway has
// read it (so return heap copies).

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "{{c_world}}.h"

typedef {{c_world}}_string_t string_t;

static char *marker = NULL;

bool exports_wasmgate_plugin_lifecycle_init(string_t *config, string_t *err) {
    (void)err;
    marker = config->len == 0 ? strdup("maintenance")
                              : strndup((const char *)config->ptr, config->len);
    {{c_world}}_string_free(config);
    return true;
}

bool exports_wasmgate_plugin_probe_evaluator_shape_request(
    string_t *pool, string_t *settings, string_t *server,
    exports_wasmgate_plugin_probe_evaluator_probe_request_t *ret) {
    (void)ret;
    {{c_world}}_string_free(pool);
    {{c_world}}_string_free(settings);
    {{c_world}}_string_free(server);
    return false; // none: the configured probe
}

// Whether `haystack` (n bytes) contains the C string `needle`.
static bool contains(const uint8_t *haystack, size_t n, const char *needle) {
    size_t m = strlen(needle);
    for (size_t i = 0; m <= n && i <= n - m; i++) {
        if (memcmp(haystack + i, needle, m) == 0) return true;
    }
    return false;
}

void exports_wasmgate_plugin_probe_evaluator_evaluate(
    exports_wasmgate_plugin_probe_evaluator_probe_response_t *response,
    exports_wasmgate_plugin_probe_evaluator_verdict_t *ret) {
    char reason[160];
    if (!response->status.is_some) {
        ret->healthy = false;
        snprintf(reason, sizeof reason, "%.*s", (int)response->error.val.len,
                 (const char *)response->error.val.ptr);
    } else if (response->status.val < 200 || response->status.val > 399) {
        ret->healthy = false;
        snprintf(reason, sizeof reason, "status %u", response->status.val);
    } else if (contains(response->body.ptr, response->body.len, marker)) {
        ret->healthy = false;
        snprintf(reason, sizeof reason, "the body says \"%s\"", marker);
    } else {
        ret->healthy = true;
        snprintf(reason, sizeof reason, "status %u", response->status.val);
    }
    {{c_world}}_string_dup(&ret->reason, reason);
    exports_wasmgate_plugin_probe_evaluator_probe_response_free(response);
}
