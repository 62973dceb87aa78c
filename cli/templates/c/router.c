// The {{name}} router in C (world `router-plugin`; bindings generated into gen/ by
// `wit-bindgen c`, see gen/{{c_world}}.h for every type).
//
// Requests with `x-beta: 1` go to the beta pool (named by the plugin's `config` string),
// `/healthz` is answered by the gateway itself, and everything else is left to the gateway's
// native rules.
//
// Ownership, as wit-bindgen's C bindings define it: the arguments of an exported function
// belong to it (free them), and what it returns is freed by the bindings after the gateway has
// read it (so return heap copies, never pointers to static or borrowed data).

#include <stdlib.h>
#include <string.h>

#include "{{c_world}}.h"

typedef {{c_world}}_string_t string_t;

static char *beta_pool = NULL;

// Whether a WIT string equals a C string.
static bool equals(const string_t *s, const char *c) {
    size_t n = strlen(c);
    return s->len == n && memcmp(s->ptr, c, n) == 0;
}

// The value of request header `name` (lower case, as the gateway passes names), if any.
static const wasmgate_plugin_types_header_t *header(
    const exports_wasmgate_plugin_router_request_head_t *request, const char *name) {
    for (size_t i = 0; i < request->headers.len; i++) {
        if (equals(&request->headers.ptr[i].name, name)) {
            return &request->headers.ptr[i];
        }
    }
    return NULL;
}

// A heap copy of `text` as bytes (a header value or a body).
static {{c_world}}_list_u8_t bytes(const char *text) {
    {{c_world}}_list_u8_t list;
    list.len = strlen(text);
    list.ptr = malloc(list.len);
    memcpy(list.ptr, text, list.len);
    return list;
}

bool exports_wasmgate_plugin_lifecycle_init(string_t *config, string_t *err) {
    size_t start = 0, end = config->len;
    while (start < end && config->ptr[start] == ' ') start++;
    while (end > start && config->ptr[end - 1] == ' ') end--;
    if (start == end) {
        {{c_world}}_string_free(config);
        {{c_world}}_string_dup(err, "config: the name of the beta pool is required");
        return false;
    }
    beta_pool = strndup((const char *)config->ptr + start, end - start);
    {{c_world}}_string_free(config);

    string_t message;
    {{c_world}}_string_dup(&message, "beta traffic goes to the pool named in the config");
    wasmgate_plugin_host_log(WASMGATE_PLUGIN_TYPES_LOG_LEVEL_INFO, &message);
    {{c_world}}_string_free(&message);
    return true;
}

void exports_wasmgate_plugin_router_route(exports_wasmgate_plugin_router_request_head_t *request,
                                          exports_wasmgate_plugin_router_decision_t *ret) {
    const wasmgate_plugin_types_header_t *beta = header(request, "x-beta");
    if (equals(&request->path, "/healthz")) {
        ret->tag = WASMGATE_PLUGIN_TYPES_DECISION_RESPOND;
        wasmgate_plugin_types_direct_response_t *respond = &ret->val.respond;
        respond->status = 200;
        respond->headers.len = 1;
        respond->headers.ptr = malloc(sizeof(wasmgate_plugin_types_header_t));
        {{c_world}}_string_dup(&respond->headers.ptr[0].name, "content-type");
        respond->headers.ptr[0].value = bytes("text/plain");
        respond->body = bytes("ok\n");
    } else if (beta != NULL && beta->value.len == 1 && beta->value.ptr[0] == '1') {
        ret->tag = WASMGATE_PLUGIN_TYPES_DECISION_FORWARD;
        wasmgate_plugin_types_forward_t *forward = &ret->val.forward;
        {{c_world}}_string_dup(&forward->pool, beta_pool);
        {{c_world}}_string_dup(&forward->settings, "web");
        forward->server.is_some = false;
        forward->path.is_some = false;
        forward->header_edits.len = 1;
        forward->header_edits.ptr = malloc(sizeof(wasmgate_plugin_types_header_edit_t));
        wasmgate_plugin_types_header_edit_t *edit = &forward->header_edits.ptr[0];
        edit->tag = WASMGATE_PLUGIN_TYPES_HEADER_EDIT_SET;
        {{c_world}}_string_dup(&edit->val.set.name, "x-routed-by");
        edit->val.set.value = bytes("{{name}}");
    } else {
        ret->tag = WASMGATE_PLUGIN_TYPES_DECISION_DEFER;
    }
    exports_wasmgate_plugin_router_request_head_free(request);
}
