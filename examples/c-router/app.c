// A router plugin in C (world `router-plugin`), built with clang and wasi-libc for
// wasm32-wasi, bindings from `wit-bindgen c`, linked into a component by wasm-component-ld
// (scripts/build-plugins has the commands; `wasmgate plugin build` runs the same ones).
//
// Configuration (plain text, one route per line, `#` starts a comment):
//
//     /api/   api      api
//     /img/   static   web
//
// - `/healthz` is answered 200 by the gateway itself.
// - WebSocket handshakes defer to the native rules.
// - The first route whose prefix starts the path (case-sensitive) forwards to its pool with its
//   backend settings, adding `x-routed-by: c`.
// - Everything else defers to the native rules.
//
// Ownership, as wit-bindgen's C bindings define it: the arguments of an exported function
// belong to it (free them), and what it returns is freed by the bindings after the gateway has
// read it (so return heap copies).

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "router_plugin.h"

#define MAX_ROUTES 64

struct route {
    char *prefix;
    char *pool;
    char *settings;
};

static struct route routes[MAX_ROUTES];
static size_t route_count = 0;

static bool starts_with(const router_plugin_string_t *s, const char *prefix) {
    size_t n = strlen(prefix);
    return s->len >= n && memcmp(s->ptr, prefix, n) == 0;
}

static bool equals(const router_plugin_string_t *s, const char *c) {
    return s->len == strlen(c) && starts_with(s, c);
}

static router_plugin_list_u8_t bytes(const char *text) {
    router_plugin_list_u8_t list;
    list.len = strlen(text);
    list.ptr = malloc(list.len);
    memcpy(list.ptr, text, list.len);
    return list;
}

static void fail(router_plugin_string_t *err, size_t line, const char *why) {
    char message[160];
    snprintf(message, sizeof message, "config line %zu: %s", line, why);
    router_plugin_string_dup(err, message);
}

bool exports_wasmgate_plugin_lifecycle_init(router_plugin_string_t *config,
                                            router_plugin_string_t *err) {
    char *text = strndup((const char *)config->ptr, config->len);
    router_plugin_string_free(config);
    size_t line_number = 0;
    bool ok = true;
    char *rest = text;
    for (char *line = strsep(&rest, "\n"); line != NULL; line = strsep(&rest, "\n")) {
        line_number++;
        char *hash = strchr(line, '#');
        if (hash != NULL) *hash = '\0';
        char prefix[256], pool[256], settings[256], extra[2];
        int n = sscanf(line, "%255s %255s %255s %1s", prefix, pool, settings, extra);
        if (n <= 0) continue; // blank
        if (n != 3) {
            fail(err, line_number, "expected PREFIX POOL SETTINGS");
            ok = false;
            break;
        }
        if (prefix[0] != '/') {
            fail(err, line_number, "the prefix must start with /");
            ok = false;
            break;
        }
        if (route_count == MAX_ROUTES) {
            fail(err, line_number, "more than 64 routes");
            ok = false;
            break;
        }
        routes[route_count++] = (struct route){strdup(prefix), strdup(pool), strdup(settings)};
    }
    free(text);
    if (ok) {
        char message[64];
        snprintf(message, sizeof message, "%zu routes", route_count);
        router_plugin_string_t log;
        router_plugin_string_set(&log, message);
        wasmgate_plugin_host_log(WASMGATE_PLUGIN_TYPES_LOG_LEVEL_INFO, &log);
    }
    return ok;
}

void exports_wasmgate_plugin_router_route(exports_wasmgate_plugin_router_request_head_t *request,
                                          exports_wasmgate_plugin_router_decision_t *ret) {
    ret->tag = WASMGATE_PLUGIN_TYPES_DECISION_DEFER;
    if (equals(&request->path, "/healthz")) {
        ret->tag = WASMGATE_PLUGIN_TYPES_DECISION_RESPOND;
        wasmgate_plugin_types_direct_response_t *respond = &ret->val.respond;
        respond->status = 200;
        respond->headers.len = 1;
        respond->headers.ptr = malloc(sizeof(wasmgate_plugin_types_header_t));
        router_plugin_string_dup(&respond->headers.ptr[0].name, "content-type");
        respond->headers.ptr[0].value = bytes("text/plain");
        respond->body = bytes("ok\n");
    } else if (!request->websocket) {
        for (size_t i = 0; i < route_count; i++) {
            if (!starts_with(&request->path, routes[i].prefix)) continue;
            ret->tag = WASMGATE_PLUGIN_TYPES_DECISION_FORWARD;
            wasmgate_plugin_types_forward_t *forward = &ret->val.forward;
            router_plugin_string_dup(&forward->pool, routes[i].pool);
            router_plugin_string_dup(&forward->settings, routes[i].settings);
            forward->server.is_some = false;
            forward->path.is_some = false;
            forward->header_edits.len = 1;
            forward->header_edits.ptr = malloc(sizeof(wasmgate_plugin_types_header_edit_t));
            forward->header_edits.ptr[0].tag = WASMGATE_PLUGIN_TYPES_HEADER_EDIT_SET;
            wasmgate_plugin_types_header_t *set = &forward->header_edits.ptr[0].val.set;
            router_plugin_string_dup(&set->name, "x-routed-by");
            set->value = bytes("c");
            break;
        }
    }
    exports_wasmgate_plugin_router_request_head_free(request);
}
